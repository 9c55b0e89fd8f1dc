package testharness

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Child is this test binary run again as a child process, in a role its
// TestMain picks from the environment (a server, a subscriber), so that a
// benchmark can measure its own process's CPU apart from the child's. It
// talks in lines: the child's standard output, read with Line, and its
// standard input, which Stop closes to tell it to exit.
type Child struct {
	Stdin io.WriteCloser
	cmd   *exec.Cmd
	what  string
	lines chan string
	done  chan error
}

// StartChild starts this test binary, running no test, with env added to
// its environment; what names it in failures. It is stopped when t ends.
func StartChild(t testing.TB, what string, env ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the %s: %v", what, err)
	}
	c := &Child{Stdin: stdin, cmd: cmd, what: what, lines: make(chan string, 4), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.done <- cmd.Wait()
	}()
	t.Cleanup(c.Stop)
	return c
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Line waits up to two minutes for the child's next line of output.
func (c *Child) Line(t testing.TB) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("the %s exited: %v", c.what, <-c.done)
		}
		return l
	case <-time.After(2 * time.Minute):
		t.Fatalf("nothing from the %s within 2 minutes", c.what)
	}
	return ""
}

// Stop closes the child's standard input and waits for it to exit.
func (c *Child) Stop() {
	c.Stdin.Close()
	for range c.lines {
	}
}
