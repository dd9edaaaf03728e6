package scanner

import (
	"net"
	"syscall"
	"time"
)

// peerPid returns the pid of the process listening on a unix socket.
func peerPid(path string) (int, error) {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var pid int
	var cerr error
	err = raw.Control(func(fd uintptr) {
		var cred *syscall.Ucred
		if cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); cerr == nil {
			pid = int(cred.Pid)
		}
	})
	if err != nil {
		return 0, err
	}
	return pid, cerr
}
