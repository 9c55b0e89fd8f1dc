package cli

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
)

// BytesVar defines flag name for a size in bytes, written as a number with
// an optional binary unit: 1073741824, 1024MiB, 1GiB, 512KiB.
func BytesVar(fs *flag.FlagSet, p *int64, name string, def int64, usage string) {
	*p = def
	fs.Var((*byteSize)(p), name, usage)
}

type byteSize int64

func (b *byteSize) String() string {
	if b == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*b), 10)
}

func (b *byteSize) Set(s string) error {
	n, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

// ParseBytes reads a size: digits, then optionally KiB, MiB, GiB or TiB.
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for i, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if rest, ok := strings.CutSuffix(s, u); ok {
			s, mult = strings.TrimSpace(rest), int64(1)<<(10*(i+1))
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a whole number of bytes, or of KiB, MiB, GiB or TiB", s)
	}
	return n * mult, nil
}
