package chserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// ErrNotFound means neither clickhouse-server nor clickhouse is installed
// where Find looks. Callers branch on it to run without storage (the demo)
// or to skip (tests).
var ErrNotFound = errors.New("no ClickHouse server binary found: install clickhouse-server " +
	"(Debian/Ubuntu: apt-get install clickhouse-server) or put the single clickhouse binary on PATH " +
	"(https://clickhouse.com/docs/en/install)")

// Defaults for zero fields of Options.
const (
	DefaultStartTimeout = 30 * time.Second
	DefaultStopTimeout  = 20 * time.Second
)

// fallbackDirs are searched after PATH: Debian installs clickhouse-server in
// /usr/sbin, which is not on an ordinary user's PATH.
var fallbackDirs = []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"}

// Find returns the command line that runs a ClickHouse server:
// [clickhouse-server] if that is installed, else [clickhouse server] for the
// single-binary distribution. It looks on PATH, then in /usr/sbin,
// /usr/bin and /usr/local/bin. It returns ErrNotFound if neither exists.
func Find() ([]string, error) {
	candidates := []struct {
		name string
		args []string
	}{{"clickhouse-server", nil}, {"clickhouse", []string{"server"}}}
	for _, c := range candidates {
		if p, err := exec.LookPath(c.name); err == nil {
			return append([]string{p}, c.args...), nil
		}
	}
	for _, c := range candidates {
		for _, d := range fallbackDirs {
			p := filepath.Join(d, c.name)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return append([]string{p}, c.args...), nil
			}
		}
	}
	return nil, ErrNotFound
}

// Options configures Start.
type Options struct {
	// Argv runs the server, as returned by Find; nil means call Find.
	// Start appends --config-file.
	Argv []string
	// Dir holds the generated configuration, the data (Dir/data), and the
	// logs (Dir/log). It is created if missing. Starting again on the same
	// Dir finds the same databases.
	Dir string
	// TCPPort is the native protocol port and HTTPPort the HTTP port, both
	// on 127.0.0.1. Zero picks a free port.
	TCPPort  int
	HTTPPort int
	// StartTimeout bounds the wait for the server to answer a ping.
	StartTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	StopTimeout time.Duration
	// Logger gets the lifecycle events; nil discards them. The server's own
	// log goes to files in Dir/log.
	Logger *slog.Logger
	// Cluster, if set, makes the server one replica of one shard of a
	// cluster (see StartCluster); nil is a server on its own.
	Cluster *Membership
}

// Server is a ClickHouse server process started by Start.
type Server struct {
	opts Options // resolved: Argv, absolute Dir and both ports set
	log  *slog.Logger

	mu   sync.Mutex
	proc *process // nil once stopped
}

// process is one run of the server binary.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // from Wait, valid once done is closed
}

// Start writes the configuration into opts.Dir, starts the server in its own
// process group and waits until it answers a native-protocol ping. A failed
// start returns an error that quotes the end of the server's error log.
//
// To restart on the same data, call Restart, or Start again with the
// Options of a stopped Server (see Server.Options).
func Start(ctx context.Context, opts Options) (*Server, error) {
	opts, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	// Ports picked here may be taken by someone else before the server binds
	// them; when we picked them, try again with others.
	const attempts = 3
	for i := 1; ; i++ {
		o := opts
		if o.TCPPort == 0 || o.HTTPPort == 0 {
			if o.TCPPort, o.HTTPPort, err = freePorts(o.TCPPort, o.HTTPPort); err != nil {
				return nil, err
			}
		}
		s := &Server{opts: o, log: o.Logger}
		err := s.start(ctx)
		if err == nil {
			return s, nil
		}
		if i == attempts || !errors.Is(err, errPortInUse) || mentionsPort(err, opts.TCPPort, opts.HTTPPort) {
			return nil, err
		}
		o.Logger.Warn("ClickHouse port taken, trying others", "err", err)
	}
}

func (o Options) resolve() (Options, error) {
	if o.Dir == "" {
		return o, errors.New("chserver: Options.Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return o, fmt.Errorf("chserver: data directory %s: %w", o.Dir, err)
	}
	o.Dir = dir
	if len(o.Argv) == 0 {
		if o.Argv, err = Find(); err != nil {
			return o, err
		}
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// freePorts returns tcp and http, replacing zeros by ports that are free now.
func freePorts(tcp, http int) (int, int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	pick := func(p *int) error {
		if *p != 0 {
			return nil
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("chserver: finding a free port: %w", err)
		}
		lns = append(lns, ln) // held until both are picked, so they differ
		*p = ln.Addr().(*net.TCPAddr).Port
		return nil
	}
	if err := pick(&tcp); err != nil {
		return 0, 0, err
	}
	if err := pick(&http); err != nil {
		return 0, 0, err
	}
	return tcp, http, nil
}

// mentionsPort reports whether err names one of the non-zero ports: a port
// the caller chose, which another attempt would not change.
func mentionsPort(err error, ports ...int) bool {
	for _, p := range ports {
		if p != 0 && strings.Contains(err.Error(), ":"+strconv.Itoa(p)) {
			return true
		}
	}
	return false
}

// errPortInUse marks a start that failed because a port was taken.
var errPortInUse = errors.New("port in use")

func (s *Server) start(ctx context.Context) error {
	conf, err := writeConfig(s.opts.Dir, s.opts.TCPPort, s.opts.HTTPPort, s.opts.Cluster)
	if err != nil {
		return fmt.Errorf("chserver: %w", err)
	}
	console, err := os.OpenFile(s.path(consoleLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("chserver: %w", err)
	}
	defer console.Close() // the child has its own copy
	// The error log only grows; remember where this run starts so that a
	// failure quotes this run's lines, not a previous one's.
	errStart := fileSize(s.path(errorLog))
	consoleStart := fileSize(s.path(consoleLog))

	argv := append(append([]string(nil), s.opts.Argv...), "--config-file="+conf)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = s.opts.Dir
	cmd.Stdout, cmd.Stderr = console, console
	// Current releases may run the server under a watchdog parent; without
	// it our signals reach the server itself.
	cmd.Env = append(os.Environ(), "CLICKHOUSE_WATCHDOG_ENABLE=0")
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("chserver: starting %s: %w", strings.Join(argv, " "), err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.log.Info("ClickHouse starting", "pid", cmd.Process.Pid, "addr", s.Addr(), "dir", s.opts.Dir)

	version, err := s.waitReady(ctx, p)
	if err != nil {
		p.signal(syscall.SIGKILL)
		<-p.done
		tail := tailLines(s.path(errorLog), errStart, 12)
		if tail == "" {
			tail = tailLines(s.path(consoleLog), consoleStart, 12)
		}
		err = fmt.Errorf("chserver: ClickHouse (%s, data in %s) did not start: %w", strings.Join(argv, " "), s.opts.Dir, err)
		if tail != "" {
			err = fmt.Errorf("%w\nlast lines of its log (%s):\n%s", err, filepath.Join(s.opts.Dir, logDir), tail)
		}
		if strings.Contains(tail, "already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	s.log.Info("ClickHouse ready", "pid", cmd.Process.Pid, "addr", s.Addr(), "version", version)
	return nil
}

// waitReady pings until the server answers, the process exits, the start
// timeout passes or ctx ends. It returns the server's version.
func (s *Server) waitReady(ctx context.Context, p *process) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{s.Addr()},
		DialTimeout: time.Second,
	})
	if err != nil {
		return "", fmt.Errorf("opening a client: %w", err)
	}
	defer conn.Close()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		err := conn.Ping(pctx)
		pcancel()
		if err == nil {
			v, err := conn.ServerVersion()
			if err != nil {
				return "", nil
			}
			return fmt.Sprintf("%d.%d.%d", v.Version.Major, v.Version.Minor, v.Version.Patch), nil
		}
		select {
		case <-p.done:
			return "", fmt.Errorf("it exited (%v)", p.err)
		case <-ctx.Done():
			return "", fmt.Errorf("no answer to ping on %s within %s: %w", s.Addr(), s.opts.StartTimeout, err)
		case <-tick.C:
		}
	}
}

// Addr is the native protocol address, 127.0.0.1:port.
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.opts.TCPPort))
}

// HTTPAddr is the HTTP interface's address, 127.0.0.1:port.
func (s *Server) HTTPAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.opts.HTTPPort))
}

// Dir is the directory holding the configuration, data and logs.
func (s *Server) Dir() string { return s.opts.Dir }

// Options returns the options the server runs with, ports filled in: Start
// with them restarts it on the same data and ports.
func (s *Server) Options() Options { return s.opts }

// PID is the server process's id, or 0 when it is not running. Benchmarks
// read its CPU time from /proc.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Running reports whether the process is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits for the server to exit, sending SIGKILL after
// StopTimeout. It returns an error only if the server had to be killed.
// Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	p := s.take()
	if p == nil {
		return nil
	}
	p.signal(syscall.SIGTERM)
	t := time.NewTimer(s.opts.StopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		s.log.Info("ClickHouse stopped", "addr", s.Addr())
		return nil
	case <-t.C:
	}
	p.signal(syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("chserver: ClickHouse on %s did not stop within %s of SIGTERM; killed it", s.Addr(), s.opts.StopTimeout)
}

// Kill sends SIGKILL and waits for the process to exit: an abrupt outage,
// as tests of failure handling need. Killing a stopped server does nothing.
func (s *Server) Kill() {
	p := s.take()
	if p == nil {
		return
	}
	p.signal(syscall.SIGKILL)
	<-p.done
	s.log.Info("ClickHouse killed", "addr", s.Addr())
}

// Restart stops the server if it runs, then starts it again with the same
// directory and ports.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(); err != nil {
		s.log.Warn("ClickHouse restart", "err", err)
	}
	return s.start(ctx)
}

// take detaches the current process, so that only one caller stops it.
func (s *Server) take() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	s.proc = nil
	return p
}

// signal signals the process group, so that children of the server, if
// any, get it too. Errors mean the process is already gone.
func (p *process) signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

func (s *Server) path(name string) string {
	if name == configFile || name == usersFile {
		return filepath.Join(s.opts.Dir, name)
	}
	return filepath.Join(s.opts.Dir, logDir, name)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// tailLines returns up to n last lines of path written after offset from,
// indented for quoting in an error.
func tailLines(path string, from int64, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxTail = 16 << 10
	if size := fileSize(path); size-from > maxTail {
		from = size - maxTail
	}
	if from > 0 {
		if _, err := f.Seek(from, io.SeekStart); err != nil {
			return ""
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTail))
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var out strings.Builder
	for _, l := range lines {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		out.WriteString("  ")
		out.Write(l)
		out.WriteByte('\n')
	}
	return strings.TrimRight(out.String(), "\n")
}

// LogTail returns up to n last lines of the server's error log and of its
// console (stdout and stderr), for a test that failed to say what the
// server saw.
func (s *Server) LogTail(n int) string {
	return "error log:\n" + tailLines(s.path(errorLog), 0, n) + "\nconsole:\n" + tailLines(s.path(consoleLog), 0, n)
}
