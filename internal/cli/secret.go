package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// SecretVar defines flag name for a secret (a password, a token) stored in
// *p, with default def, and beside it the flag name+"-file", which reads the
// secret from a file instead: the way container secrets and files kept out
// of the repository are handed over. Both can be set by the environment
// (TELEMETRY_<NAME> and TELEMETRY_<NAME>_FILE); the file is read when its
// flag is set, and trailing newlines are dropped.
func SecretVar(fs *flag.FlagSet, p *string, name, def, usage string) {
	fs.StringVar(p, name, def, usage)
	fs.Var(secretFile{p}, name+"-file", "file holding the value of --"+name+" (instead of the flag itself)")
}

// secretFile is the flag.Value of a secret's -file flag.
type secretFile struct{ p *string }

func (s secretFile) String() string { return "" }

func (s secretFile) Set(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading secret: %w", err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return fmt.Errorf("secret file %s is empty", path)
	}
	*s.p = v
	return nil
}
