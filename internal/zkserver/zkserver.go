package zkserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Jar is where Debian's zookeeper package puts the server.
const Jar = "/usr/share/java/zookeeper.jar"

// mainClass runs one standalone server from a zoo.cfg.
const mainClass = "org.apache.zookeeper.server.ZooKeeperServerMain"

// Bounds of Start and Stop.
const (
	StartTimeout = 30 * time.Second
	StopTimeout  = 10 * time.Second
)

// ErrNotFound means java or Debian's ZooKeeper jar is missing.
var ErrNotFound = errors.New("no ZooKeeper found: install it (Debian/Ubuntu: apt-get install zookeeper), which brings " + Jar + " and java")

// Find returns the java binary and the jar, or ErrNotFound.
func Find() (java, jar string, err error) {
	java, err = exec.LookPath("java")
	if err != nil {
		return "", "", ErrNotFound
	}
	if _, err := os.Stat(Jar); err != nil {
		return "", "", ErrNotFound
	}
	return java, Jar, nil
}

// Server is a running ZooKeeper.
type Server struct {
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// config: ticks of 500 ms make session expiry, which ClickHouse's replicas
// rely on to see one another gone, a matter of seconds; no admin HTTP
// server (it would take port 8080); the srvr command answers the readiness
// check.
const config = `tickTime=500
initLimit=10
syncLimit=5
dataDir=%s
clientPortAddress=127.0.0.1
clientPort=%d
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=srvr
`

// Start runs a server with its files in dir (created if missing) on a free
// loopback port and waits until it serves: its srvr command reports a
// mode. (ruok answers imok before the server takes sessions; a ClickHouse
// that fails to get one at start never retries on 18.16.)
func Start(ctx context.Context, dir string) (*Server, error) {
	java, jar, err := Find()
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("zkserver: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o750); err != nil {
		return nil, fmt.Errorf("zkserver: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("zkserver: finding a free port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := filepath.Join(dir, "zoo.cfg")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, config, filepath.Join(dir, "data"), port), 0o640); err != nil {
		return nil, fmt.Errorf("zkserver: %w", err)
	}
	out, err := os.OpenFile(filepath.Join(dir, "zookeeper.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("zkserver: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(java, "-Xmx256m", "-Dzookeeper.log.dir="+dir, "-cp", jar, mainClass, cfg)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("zkserver: starting %s: %w", java, err)
	}
	s := &Server{dir: dir, port: port, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, fmt.Errorf("zkserver: ZooKeeper (log in %s) did not start: %w", out.Name(), err)
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := s.serving()
		if ok {
			return nil
		}
		select {
		case <-s.done:
			return errors.New("it exited")
		case <-ctx.Done():
			return fmt.Errorf("not serving on %s within %s: %v", s.Addr(), StartTimeout, err)
		case <-tick.C:
		}
	}
}

// serving asks the server whether it serves.
func (s *Server) serving() (bool, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "srvr"); err != nil {
		return false, err
	}
	b, err := io.ReadAll(c)
	return strings.Contains(string(b), "\nMode: "), err
}

// Addr is the client address, 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Stop sends SIGTERM, then SIGKILL after StopTimeout, and waits for the
// process to exit.
func (s *Server) Stop() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
		return
	case <-time.After(StopTimeout):
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}
