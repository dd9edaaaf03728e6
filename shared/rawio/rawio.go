//go:build linux

// Package rawio makes the system calls of a plugin's per-artifact path
// that return at once (on non-blocking sockets, fstat of an open
// descriptor, a small read of a file just read by clamd) without telling
// the Go scheduler that they might block.
//
// Why: a Go process whose goroutines all wait parks its sysmon thread,
// and the next system call made through package syscall wakes it; sysmon
// then polls every 20 µs until the process is idle again. The clamav
// plugin goes idle between clamd's answers, a few times a millisecond on
// small files, so nearly every answer woke sysmon (2,082 wakeups for
// 4,000 × 4 KiB files, ~0.5 of the plugin's 2.2 context switches a file;
// sysmon was 13-19% of the plugin's CPU in perf). A raw system call skips
// that bookkeeping. It is only right for calls that cannot block: a
// socket's "would block" comes back as EAGAIN, and is waited for on the
// runtime's poller through syscall.RawConn, as package net does.
package rawio

import (
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read reads once from rc into p, waiting on the poller (and within rc's
// read deadline) while there is nothing to read. At the end of the
// stream it returns 0, nil, as read(2) does.
func Read(rc syscall.RawConn, p []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := rc.Read(func(fd uintptr) bool {
		n, errno = retry(unix.SYS_READ, fd, p)
		return errno != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

// Write writes all of p to rc, waiting on the poller (and within rc's
// write deadline) while the socket is full. It returns how many bytes
// went out.
func Write(rc syscall.RawConn, p []byte) (int, error) {
	var done int
	var errno syscall.Errno
	err := rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, e := retry(unix.SYS_WRITE, fd, p[done:])
			if e == unix.EAGAIN {
				return false
			}
			if e != 0 {
				errno = e
				return true
			}
			done += n
		}
		return true
	})
	if err != nil {
		return done, err
	}
	if errno != 0 {
		return done, errno
	}
	return done, nil
}

// Recvmsg receives one message and its control data from rc, waiting on
// the poller (and within rc's read deadline) while there is none.
// Descriptors that come with it are close-on-exec.
func Recvmsg(rc syscall.RawConn, p, oob []byte) (n, oobn, flags int, err error) {
	var errno syscall.Errno
	rerr := rc.Read(func(fd uintptr) bool {
		var msg unix.Msghdr
		var iov unix.Iovec
		if len(p) > 0 {
			iov.Base = &p[0]
			iov.SetLen(len(p))
			msg.Iov = &iov
			msg.SetIovlen(1)
		}
		if len(oob) > 0 {
			msg.Control = &oob[0]
			msg.SetControllen(len(oob))
		}
		var r uintptr
		for {
			r, _, errno = unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&msg)), unix.MSG_CMSG_CLOEXEC)
			if errno != unix.EINTR {
				break
			}
		}
		if errno == unix.EAGAIN {
			return false
		}
		n, oobn, flags = int(r), int(msg.Controllen), int(msg.Flags)
		return true
	})
	if rerr != nil {
		return 0, 0, 0, rerr
	}
	if errno != 0 {
		return 0, 0, 0, errno
	}
	return n, oobn, flags, nil
}

// Sendmsg sends p, which must not be empty, with the control data oob on
// rc, waiting on the poller (and within rc's write deadline) while the
// socket is full. On a stream socket only a message short enough to be
// queued whole is sent whole or not at all.
func Sendmsg(rc syscall.RawConn, p, oob []byte) error {
	return sendmsg(rc, p, oob, true)
}

// TrySendmsg is Sendmsg that does not wait: on a full socket it returns
// EAGAIN, having sent nothing.
func TrySendmsg(rc syscall.RawConn, p, oob []byte) error {
	return sendmsg(rc, p, oob, false)
}

func sendmsg(rc syscall.RawConn, p, oob []byte, wait bool) error {
	var errno syscall.Errno
	err := rc.Write(func(fd uintptr) bool {
		iov := unix.Iovec{Base: &p[0]}
		iov.SetLen(len(p))
		msg := unix.Msghdr{Iov: &iov}
		msg.SetIovlen(1)
		if len(oob) > 0 {
			msg.Control = &oob[0]
			msg.SetControllen(len(oob))
		}
		for {
			_, _, errno = unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&msg)), unix.MSG_NOSIGNAL)
			if errno != unix.EINTR {
				break
			}
		}
		return !wait || errno != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// Fstat is fstat(2) on f's descriptor. Unlike f.Fd, it leaves the
// descriptor's blocking mode as it is.
func Fstat(f *os.File, st *unix.Stat_t) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.RawSyscall(unix.SYS_FSTAT, fd, uintptr(unsafe.Pointer(st)), 0)
	}); err != nil {
		return err
	}
	if errno != 0 {
		return &os.PathError{Op: "fstat", Path: f.Name(), Err: errno}
	}
	return nil
}

// ReadAt is f.ReadAt, for small reads of pages that are cached (a file
// clamd has just read): a read that waits on a disk would hold up the
// goroutines of its thread's P meanwhile. Like f.ReadAt, it reads until p
// is full, and returns io.EOF when the file ends first.
func ReadAt(f *os.File, p []byte, off int64) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		for n < len(p) && errno == 0 {
			r, _, e := unix.RawSyscall6(unix.SYS_PREAD64, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n), uintptr(off+int64(n)), 0, 0)
			switch {
			case e == unix.EINTR:
			case e != 0:
				errno = e
			case r == 0:
				return
			default:
				n += int(r)
			}
		}
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		return n, &os.PathError{Op: "read", Path: f.Name(), Err: errno}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// retry makes read(2) or write(2) on fd, again when interrupted.
func retry(trap uintptr, fd uintptr, p []byte) (int, syscall.Errno) {
	var base unsafe.Pointer
	if len(p) > 0 {
		base = unsafe.Pointer(&p[0])
	}
	for {
		r, _, e := unix.RawSyscall(trap, fd, uintptr(base), uintptr(len(p)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}
