//go:build !linux

package rawio

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Elsewhere than on Linux the same calls go through package unix, with
// the scheduler told: the plugin's by-reference path is Linux's alone,
// and these keep the packages that use them building.

func Read(rc syscall.RawConn, p []byte) (int, error) {
	var n int
	var err error
	rerr := rc.Read(func(fd uintptr) bool {
		n, err = unix.Read(int(fd), p)
		return err != unix.EAGAIN
	})
	if rerr != nil {
		return 0, rerr
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

func Write(rc syscall.RawConn, p []byte) (int, error) {
	var done int
	var err error
	rerr := rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, e := unix.Write(int(fd), p[done:])
			if e == unix.EAGAIN {
				return false
			}
			if e != nil {
				err = e
				return true
			}
			done += n
		}
		return true
	})
	if rerr != nil {
		return done, rerr
	}
	return done, err
}

func Recvmsg(rc syscall.RawConn, p, oob []byte) (n, oobn, flags int, err error) {
	rerr := rc.Read(func(fd uintptr) bool {
		n, oobn, flags, _, err = unix.Recvmsg(int(fd), p, oob, 0)
		return err != unix.EAGAIN
	})
	if rerr != nil {
		return 0, 0, 0, rerr
	}
	return n, oobn, flags, err
}

func Sendmsg(rc syscall.RawConn, p, oob []byte) error { return sendmsg(rc, p, oob, true) }

func TrySendmsg(rc syscall.RawConn, p, oob []byte) error { return sendmsg(rc, p, oob, false) }

func sendmsg(rc syscall.RawConn, p, oob []byte, wait bool) error {
	var err error
	rerr := rc.Write(func(fd uintptr) bool {
		err = unix.Sendmsg(int(fd), p, oob, nil, 0)
		return !wait || err != unix.EAGAIN
	})
	if rerr != nil {
		return rerr
	}
	return err
}

func Fstat(f *os.File, st *unix.Stat_t) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), st) }); err != nil {
		return err
	}
	return serr
}

func ReadAt(f *os.File, p []byte, off int64) (int, error) { return f.ReadAt(p, off) }
