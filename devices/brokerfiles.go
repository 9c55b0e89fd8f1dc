package devices

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/cli"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
)

// PasswordFile is a Mosquitto password file for the fleet cfg makes: the
// lines of base (the service users, may be empty), then one per device or
// gateway with its password under cfg.FleetSecret
// (broker.FleetPasswordFile), then those of each of more (other fleets
// under the same secret, such as a load test's).
func PasswordFile(cfg Config, base []byte, more ...Config) ([]byte, error) {
	cfg = cfg.withDefaults()
	var users []string
	for _, c := range append([]Config{cfg}, more...) {
		if c.withDefaults().FleetSecret != cfg.FleetSecret {
			return nil, errors.New("password file: every fleet needs the same fleet secret")
		}
		u, err := Usernames(c)
		if err != nil {
			return nil, err
		}
		users = append(users, u...)
	}
	return broker.FleetPasswordFile(base, cfg.FleetSecret, users)
}

// ACLFile is a Mosquitto ACL for the fleets: base (deploy/mosquitto/acl),
// then a block for each gateway of each fleet listing its devices' topics
// (broker.FleetACL). Without gateways it is base.
func ACLFile(base []byte, fleets ...Config) ([]byte, error) {
	all := map[devicecred.Gateway][]string{}
	for _, c := range fleets {
		gws, err := Gateways(c)
		if err != nil {
			return nil, err
		}
		for g, ids := range gws {
			all[g] = append(all[g], ids...)
		}
	}
	return broker.FleetACL(base, all)
}

// BrokerFiles says where `telemetry mqtt passwd` reads and writes
// Mosquitto's files; an empty path is stdout (PasswdOut), the repository's
// deploy/mosquitto/acl (BaseACL) or none.
type BrokerFiles struct {
	BasePasswd, PasswdOut string // the service users' lines; where the password file goes
	BaseACL, ACLOut       string // the ACL the gateways' blocks follow; where the ACL goes
	// DynsecOut, if set, is where the first configuration of Mosquitto's
	// dynamic security plugin goes (broker.DynsecConfig): its one client,
	// DynsecUser with DynsecPassword, the dashboard's join service, which
	// makes each phone's client there.
	DynsecOut, DynsecUser, DynsecPassword string
}

// RegisterFlags binds f to the flags of `telemetry mqtt passwd`.
func (f *BrokerFiles) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.BasePasswd, "base", "", "a Mosquitto password file whose lines come first (the service users: deploy/mosquitto/passwd)")
	fs.StringVar(&f.PasswdOut, "out", "", "write the file here (mode 0600) instead of to stdout")
	fs.StringVar(&f.BaseACL, "base-acl", "", "the Mosquitto ACL the gateways' lines follow (default: the repository's deploy/mosquitto/acl)")
	fs.StringVar(&f.ACLOut, "acl-out", "", "also write the ACL with each gateway's lines here (mode 0600); needed with gateways")
	fs.StringVar(&f.DynsecOut, "dynsec-out", "", "also write the first configuration of Mosquitto's dynamic security plugin here (mode 0600), where the phones that join go: one client, --dynsec-user, that may send the plugin commands and do nothing else")
	fs.StringVar(&f.DynsecUser, "dynsec-user", deploy.MQTTJoinUser, "the dynamic security plugin's client: the dashboard's join service (telemetry dashboard --phones-dynsec-user)")
	cli.SecretVar(fs, &f.DynsecPassword, "dynsec-password", deploy.DemoMQTTJoinPassword, "its password (default: the public demo default)")
}

// WriteBrokerFiles writes the password file of cfg's fleet and of more
// (each skipped if it has no devices) after the lines of files.BasePasswd,
// and, with files.ACLOut, the ACL with every gateway's block
// (ACLFile). Fleets with gateways need the ACL: Mosquitto lists each
// gateway's devices there. Files are written with mode 0600.
func WriteBrokerFiles(cfg Config, files BrokerFiles, stdout io.Writer, more ...Config) error {
	var fleets []Config
	gateways := cfg.Gateway > 0
	for _, c := range more {
		if c.Devices > 0 {
			fleets = append(fleets, c)
			gateways = gateways || c.Gateway > 0
		}
	}
	if gateways && files.ACLOut == "" {
		return errors.New("gateways need an ACL listing the devices each speaks for: give --acl-out (Mosquitto's acl_file)")
	}
	if files.DynsecOut != "" {
		conf, err := broker.DynsecConfig(files.DynsecUser, files.DynsecPassword)
		if err == nil {
			err = os.WriteFile(files.DynsecOut, conf, 0o600)
		}
		if err != nil {
			return fmt.Errorf("writing the dynamic security configuration: %w", err)
		}
	}
	base, err := readOr(files.BasePasswd, nil, "base password file")
	if err != nil {
		return err
	}
	passwd, err := PasswordFile(cfg, base, fleets...)
	if err != nil {
		return err
	}
	if err := writeOut(files.PasswdOut, passwd, stdout, "password file"); err != nil || files.ACLOut == "" {
		return err
	}
	baseACL, err := readOr(files.BaseACL, deploy.MosquittoACL, "base ACL")
	if err != nil {
		return err
	}
	acl, err := ACLFile(baseACL, append([]Config{cfg}, fleets...)...)
	if err != nil {
		return err
	}
	return writeOut(files.ACLOut, acl, stdout, "ACL")
}

func readOr(path string, otherwise []byte, what string) ([]byte, error) {
	if path == "" {
		return otherwise, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the %s: %w", what, err)
	}
	return b, nil
}

func writeOut(path string, b []byte, stdout io.Writer, what string) error {
	if path == "" {
		_, err := stdout.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("writing the %s: %w", what, err)
	}
	return nil
}

// Usernames lists the MQTT user name of every device of a fleet of cfg,
// or with Gateway of every gateway (internal/devicecred), in the fleet's
// order: what a broker without the fleet secret, Mosquitto, needs in its
// password file.
func Usernames(cfg Config) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	out := make([]string, 0, cfg.Devices)
	seen := map[string]bool{}
	for j := cfg.FirstDevice; j < cfg.FirstDevice+cfg.Devices; j++ {
		region, typ := cfg.place(j)
		u := devicecred.Username(region, typ, cfg.deviceIDAt(j, typ))
		if cfg.Gateway > 0 {
			u = cfg.gatewayOf(j).User()
		}
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out, nil
}
