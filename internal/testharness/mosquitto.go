package testharness

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/deploy"
	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
)

// MosquittoConfig is the broker configuration compose mounts, relative to
// the repository root. The tests run Mosquitto from it.
const MosquittoConfig = "deploy/mosquitto/mosquitto.conf"

const mosquittoHint = "install Mosquitto 2.0 (Debian/Ubuntu: apt-get install mosquitto; macOS: brew install mosquitto)"

// Mosquitto starts a real Mosquitto broker for the test and returns its
// address, 127.0.0.1:port (paho wants "tcp://" + addr). It is stopped when
// the test ends. Use MosquittoBroker to stop, kill or restart it.
func Mosquitto(t testing.TB) string {
	t.Helper()
	return MosquittoBroker(t).Addr()
}

// Broker is a Mosquitto process started by MosquittoBroker. Its methods may
// be called from any goroutine.
type Broker struct {
	bin     string
	conf    string // the generated configuration file
	logFile string
	addr    string
	ports   map[int]int // the configuration's listener ports to the test's

	mu   sync.Mutex
	proc *brokerProc // nil while stopped
}

type brokerProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait, valid once done is closed
}

// MosquittoOptions changes the repository's configuration for one test.
type MosquittoOptions struct {
	// Open drops the password file and the ACL and lets anonymous clients
	// do anything: a broker that lets spoofing through, for the tests of
	// what ingest does then. Never what compose runs.
	Open bool
	// Passwd, when set, replaces deploy/mosquitto/passwd.
	Passwd []byte
	// Devices are device user names (internal/devicecred) whose lines,
	// with their passwords under deploy.DemoFleetSecret, are added to the
	// password file: Mosquitto knows no fleet secret, so each device the
	// test connects needs its line, as `telemetry mqtt passwd` makes them.
	Devices []string
	// ACL, when set, replaces deploy/mosquitto/acl: for example that file
	// with a gateway's lines (broker.FleetACL).
	ACL []byte
	// Dynsec, when set, is the first configuration of Mosquitto's dynamic
	// security plugin (broker.DynsecConfig), where the phones' users go
	// (package join); otherwise the plugin starts with one client of a
	// password nobody knows.
	Dynsec []byte
}

// DeviceLogin is the MQTT user name and password of a device under the
// demo fleet secret (internal/devicecred), for tests that connect a device
// by hand. Its client id must be id.
func DeviceLogin(region, typ, id string) (user, password string) {
	user = devicecred.Username(region, typ, id)
	return user, devicecred.Password(deploy.DemoFleetSecret, user)
}

// MosquittoBroker starts `mosquitto -c <conf>` where conf is
// deploy/mosquitto/mosquitto.conf with only its listeners moved to free
// ports on 127.0.0.1, persistence_location to a temporary directory kept
// across Restart, the log to a file there, and password_file and acl_file
// pointed at the files beside mosquitto.conf: the users and ACL compose
// runs with, so clients need credentials (package deploy has the demo
// defaults). It returns once an MQTT CONNECT (as deploy.MQTTHealthUser)
// succeeds. The broker is stopped when the test ends. Without mosquitto
// installed the test is skipped (failed in CI).
func MosquittoBroker(t testing.TB) *Broker {
	t.Helper()
	return MosquittoBrokerWith(t, MosquittoOptions{})
}

// MosquittoBrokerWith is MosquittoBroker with the configuration changed as
// opts says.
func MosquittoBrokerWith(t testing.TB, opts MosquittoOptions) *Broker {
	t.Helper()
	bin := RequireBinary(t, "mosquitto", mosquittoHint)
	confPath := filepath.Join(RepoRoot(t), MosquittoConfig)
	src, err := os.ReadFile(confPath)
	if err != nil {
		t.Fatalf("reading the broker configuration: %v", err)
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	files := mosquittoFiles{confDir: filepath.Dir(confPath), open: opts.Open}
	if opts.Passwd != nil || len(opts.Devices) > 0 {
		passwd := opts.Passwd
		if passwd == nil {
			passwd = deploy.MosquittoPasswd
		}
		devices := make(map[string]string, len(opts.Devices))
		for _, u := range opts.Devices {
			devices[u] = devicecred.Password(deploy.DemoFleetSecret, u)
		}
		lines, err := broker.PasswordFile(devices)
		if err != nil {
			t.Fatalf("device lines of the password file: %v", err)
		}
		files.passwd = filepath.Join(dir, "passwd")
		if err := os.WriteFile(files.passwd, append(append([]byte(nil), passwd...), lines...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if !opts.Open {
		plugins, _ := filepath.Glob("/usr/lib/*/mosquitto_dynamic_security.so")
		if len(plugins) == 0 {
			t.Fatalf("no mosquitto_dynamic_security.so below /usr/lib: %s", mosquittoHint)
		}
		dynsec := opts.Dynsec
		if dynsec == nil {
			var pw [16]byte
			_, _ = rand.Read(pw[:])
			if dynsec, err = broker.DynsecConfig("join", hex.EncodeToString(pw[:])); err != nil {
				t.Fatal(err)
			}
		}
		files.plugin, files.dynsec = plugins[0], filepath.Join(dir, "dynamic-security.json")
		if err := os.WriteFile(files.dynsec, dynsec, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if opts.ACL != nil {
		files.acl = filepath.Join(dir, "acl")
		if err := os.WriteFile(files.acl, opts.ACL, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := &Broker{bin: bin, conf: filepath.Join(dir, "mosquitto.conf"), logFile: filepath.Join(dir, "mosquitto.log")}
	// A port picked here may be taken before Mosquitto binds it: try again
	// with another.
	for attempt := 1; ; attempt++ {
		ports, err := listenerPorts(src)
		if err != nil {
			t.Fatalf("%s: %v", MosquittoConfig, err)
		}
		conf, addr, err := rewriteMosquittoConf(src, ports, data, b.logFile, files, os.Geteuid() == 0)
		if err != nil {
			t.Fatalf("%s: %v", MosquittoConfig, err)
		}

		if err := os.WriteFile(b.conf, conf, 0o600); err != nil {
			t.Fatal(err)
		}
		b.addr, b.ports = addr, ports
		err = b.Restart()
		if err == nil {
			break
		}
		// Mosquitto says "in use" for a TCP listener's port, and only
		// "Unable to create websockets listener" for the WebSocket one's.
		taken := strings.Contains(err.Error(), "in use") || strings.Contains(err.Error(), "Unable to create websockets listener")
		if attempt == 3 || !taken {
			t.Fatalf("starting Mosquitto: %v", err)
		}
	}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Errorf("stopping Mosquitto: %v", err)
		}
	})
	return b
}

// mosquittoFiles says where rewriteMosquittoConf points password_file and
// acl_file.
type mosquittoFiles struct {
	confDir string // the files' directory in the repository
	passwd  string // replaces the password file when set
	acl     string // replaces the ACL when set
	plugin  string // the dynamic security plugin on this machine
	dynsec  string // its configuration file
	open    bool   // no password file, no ACL, no plugin, anonymous access
}

// Addr is the MQTT listener's address, 127.0.0.1:port.
func (b *Broker) Addr() string { return b.addr }

// URL is the broker URL for paho, tcp://127.0.0.1:port: the devices'
// listener (1883 in the configuration), where a client's id is its user
// name.
func (b *Broker) URL() string { return "tcp://" + b.addr }

// ServiceURL is the URL of the services' listener (1884 in the
// configuration), where several ingest instances log in as one user, each
// with its own client id.
func (b *Broker) ServiceURL() string {
	return "tcp://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(b.ports[1884]))
}

// WSURL is the MQTT over WebSocket listener's URL, ws://127.0.0.1:port
// (Mosquitto serves any path).
func (b *Broker) WSURL() string { return "ws://127.0.0.1:" + strconv.Itoa(b.WSPort()) + "/mqtt" }

// WSPort is the MQTT over WebSocket listener's port (8083 in the
// configuration).
func (b *Broker) WSPort() int { return b.ports[8083] }

// LogFile is Mosquitto's log, kept across restarts.
func (b *Broker) LogFile() string { return b.logFile }

// Stop sends SIGTERM, so that Mosquitto saves its persistence database,
// and waits for it to exit (SIGKILL after 10 s). Stopping a stopped broker
// does nothing.
func (b *Broker) Stop() error {
	p := b.take()
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return errors.New("mosquitto did not stop within 10s of SIGTERM; killed it")
}

// Kill sends SIGKILL and waits for the process to exit: a crash, which
// loses what Mosquitto has not autosaved yet.
func (b *Broker) Kill() {
	p := b.take()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Restart stops the broker if it runs and starts it again on the same port
// and persistence directory, returning once an MQTT CONNECT succeeds.
func (b *Broker) Restart() error {
	if err := b.Stop(); err != nil {
		return err
	}
	logStart := logSize(b.logFile)
	cmd := exec.Command(b.bin, "-c", b.conf)
	// Same process group as the test on purpose: a Ctrl-C on `go test`
	// then stops the broker too.
	cmd.Stdout, cmd.Stderr = nil, nil // everything goes to the log file
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting mosquitto: %w", err)
	}
	p := &brokerProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := b.waitReady(p); err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		err = fmt.Errorf("mosquitto -c %s on %s: %w", b.conf, b.addr, err)
		if tail := logTail(b.logFile, logStart, 10); tail != "" {
			err = fmt.Errorf("%w\nlast lines of %s:\n%s", err, b.logFile, tail)
		}
		return err
	}
	b.mu.Lock()
	b.proc = p
	b.mu.Unlock()
	return nil
}

// Pid is the running broker's process id, 0 while it is stopped: for
// benchmarks that measure its CPU time.
func (b *Broker) Pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc == nil {
		return 0
	}
	return b.proc.cmd.Process.Pid
}

func (b *Broker) take() *brokerProc {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.proc
	b.proc = nil
	return p
}

var probeID atomic.Int64

// waitReady polls until the port accepts and an MQTT CONNECT succeeds.
func (b *Broker) waitReady(p *brokerProc) error {
	deadline := time.Now().Add(15 * time.Second)
	var last error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited (%v)", p.err)
		default:
		}
		if last = mqttConnect(b.URL()); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within 15s: %w", last)
		}
		select {
		case <-p.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// mqttConnect dials url, connects with a clean session and disconnects.
func mqttConnect(url string) error {
	addr := strings.TrimPrefix(url, "tcp://")
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	c.Close()
	opts := mqtt.NewClientOptions().
		AddBroker(url).
		SetUsername(deploy.MQTTHealthUser).
		SetPassword(deploy.MQTTHealthPassword).
		SetClientID(fmt.Sprintf("testharness-probe-%d-%d", os.Getpid(), probeID.Add(1))).
		SetCleanSession(true).
		SetConnectTimeout(2 * time.Second).
		SetAutoReconnect(false).
		SetConnectRetry(false)
	cl := mqtt.NewClient(opts)
	tok := cl.Connect()
	if !tok.WaitTimeout(3 * time.Second) {
		return errors.New("MQTT CONNECT got no CONNACK within 3s")
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("MQTT CONNECT: %w", err)
	}
	cl.Disconnect(100)
	return nil
}

// listenerPorts maps every listener port of conf to a free port on
// 127.0.0.1.
func listenerPorts(conf []byte) (map[int]int, error) {
	ports := map[int]int{}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "listener" {
			continue
		}
		port, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, fmt.Errorf("listener %q: bad port", f[1])
		}
		if _, ok := ports[port]; ok || port == 0 {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln) // held until all are picked, so they differ
		ports[port] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports, sc.Err()
}

// rewriteMosquittoConf returns conf with each "listener PORT [ADDR]" moved
// to "listener ports[PORT] 127.0.0.1", persistence_location set to dataDir,
// log_dest to a file logFile, password_file and acl_file to the files of
// the same names in files.confDir (or as files says otherwise), plugin
// and plugin_opt_config_file to files.plugin and files.dynsec (the
// dynamic security plugin, for the phones), and everything else
// unchanged. The returned
// address is that of the listener on port 1883, the MQTT one. When asRoot,
// it adds "user root": Mosquitto started as root otherwise drops to user
// mosquitto, who cannot write in the test's temporary directory.
func rewriteMosquittoConf(conf []byte, ports map[int]int, dataDir, logFile string, files mosquittoFiles, asRoot bool) ([]byte, string, error) {
	var out bytes.Buffer
	var addr string
	sawPersistence, sawLog := false, false
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "listener":
			port, err := strconv.Atoi(f[1])
			if err != nil {
				return nil, "", fmt.Errorf("listener %q: bad port", f[1])
			}
			if port == 0 { // a unix socket: leave it
				break
			}
			p, ok := ports[port]
			if !ok {
				return nil, "", fmt.Errorf("no free port for listener %d", port)
			}
			line = fmt.Sprintf("listener %d 127.0.0.1", p)
			if port == 1883 {
				addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
			}
		case len(f) >= 1 && (f[0] == "port" || f[0] == "bind_address"):
			return nil, "", fmt.Errorf("%q: use listener, which the test harness knows how to move", line)
		case len(f) >= 1 && f[0] == "persistence_location":
			line = "persistence_location " + strings.TrimSuffix(dataDir, "/") + "/"
			sawPersistence = true
		case len(f) >= 1 && f[0] == "log_dest":
			if sawLog {
				continue // one destination is enough
			}
			line = "log_dest file " + logFile
			sawLog = true
		case len(f) >= 1 && f[0] == "user":
			if asRoot {
				continue // replaced below
			}
		case len(f) == 2 && (f[0] == "password_file" || f[0] == "acl_file"):
			if files.open {
				continue
			}
			path := filepath.Join(files.confDir, filepath.Base(f[1]))
			if f[0] == "password_file" && files.passwd != "" {
				path = files.passwd
			}
			if f[0] == "acl_file" && files.acl != "" {
				path = files.acl
			}
			line = f[0] + " " + path
		case len(f) == 2 && (f[0] == "plugin" || f[0] == "plugin_opt_config_file"):
			if files.open {
				continue
			}
			line = f[0] + " " + files.plugin
			if f[0] == "plugin_opt_config_file" {
				line = f[0] + " " + files.dynsec
			}
		case len(f) == 2 && f[0] == "allow_anonymous" && files.open:
			line = "allow_anonymous true"
		case len(f) == 2 && f[0] == "use_username_as_clientid" && files.open:
			continue // it refuses clients without a user name
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, "", err
	}
	if addr == "" {
		return nil, "", errors.New("no listener on port 1883")
	}
	out.WriteString("\n# Added by the test harness.\n")
	if !sawPersistence {
		out.WriteString("persistence_location " + strings.TrimSuffix(dataDir, "/") + "/\n")
	}
	if !sawLog {
		out.WriteString("log_dest file " + logFile + "\n")
	}
	if asRoot {
		name := "root"
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		out.WriteString("user " + name + "\n")
	}
	return out.Bytes(), addr, nil
}

func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail returns up to n last lines of path written after offset from.
func logTail(path string, from int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < from {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b[from:])), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}
