package chserver

import "syscall"

// sysProcAttr puts the server in its own process group, so that a Ctrl-C in
// the terminal reaches the demo alone and the demo stops ClickHouse after
// storage has drained, and asks Linux to send SIGTERM to the server if the
// process that started it dies, so that a crashed demo leaves no server
// holding the ports and the data directory's lock.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
