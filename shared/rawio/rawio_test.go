//go:build linux

package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair is a connected unix socket pair of the given type, both ends on
// the runtime's poller as package net has them.
func pair(t *testing.T, typ int) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

func rawConn(t *testing.T, c *net.UnixConn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func TestReadWaitsForDataAndWriteSendsAll(t *testing.T) {
	a, b := pair(t, unix.SOCK_STREAM)
	got := make(chan []byte, 1)
	go func() {
		var all []byte
		buf := make([]byte, 7)
		for {
			n, err := Read(rawConn(t, b), buf)
			if err != nil || n == 0 {
				got <- all
				return
			}
			all = append(all, buf[:n]...)
		}
	}()
	// More than a socket buffer, so Write has to wait for room.
	msg := bytes.Repeat([]byte("0123456789abcdef"), 64<<10)
	n, err := Write(rawConn(t, a), msg)
	if err != nil || n != len(msg) {
		t.Fatalf("Write: %d, %v; want %d", n, err, len(msg))
	}
	a.CloseWrite()
	select {
	case all := <-got:
		if !bytes.Equal(all, msg) {
			t.Fatalf("read %d bytes, not the %d written", len(all), len(msg))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the reader did not see the end of the stream")
	}
}

func TestReadEndsAtTheReadDeadline(t *testing.T) {
	_, b := pair(t, unix.SOCK_STREAM)
	b.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := Read(rawConn(t, b), make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %v, want a deadline error", err)
	}
}

func TestSendmsgPassesADescriptor(t *testing.T) {
	a, b := pair(t, unix.SOCK_SEQPACKET)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("passed by descriptor"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Sendmsg(rawConn(t, a), []byte("hdr"), unix.UnixRights(int(f.Fd()))); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, flags, err := Recvmsg(rawConn(t, b), buf, oob)
	if err != nil || string(buf[:n]) != "hdr" || flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		t.Fatalf("Recvmsg: %q, flags %#x, %v", buf[:n], flags, err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages: %v, %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("descriptors: %v, %v", fds, err)
	}
	got := os.NewFile(uintptr(fds[0]), "got")
	defer got.Close()
	flag, err := unix.FcntlInt(got.Fd(), unix.F_GETFD, 0)
	if err != nil || flag&unix.FD_CLOEXEC == 0 {
		t.Errorf("the received descriptor is not close-on-exec (%#x, %v)", flag, err)
	}
	var st unix.Stat_t
	if err := Fstat(got, &st); err != nil || st.Size != int64(len("passed by descriptor")) || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Fatalf("Fstat: size %d, mode %#o, %v", st.Size, st.Mode, err)
	}
	p := make([]byte, 6)
	if n, err := ReadAt(got, p, 10); n != 6 || err != nil || string(p) != "descri" {
		t.Fatalf("ReadAt: %d, %q, %v", n, p[:n], err)
	}
	if n, err := ReadAt(got, make([]byte, 64), 7); n != 13 || err != io.EOF {
		t.Fatalf("ReadAt past the end: %d, %v; want 13, io.EOF", n, err)
	}
}

func TestTrySendmsgDoesNotWaitOnAFullSocket(t *testing.T) {
	a, _ := pair(t, unix.SOCK_STREAM)
	rc := rawConn(t, a)
	msg := bytes.Repeat([]byte{'x'}, 4096)
	for i := 0; ; i++ {
		err := TrySendmsg(rc, msg, nil)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i > 100000 {
			t.Fatal("the socket never filled")
		}
	}
	// Sendmsg waits instead, until the write deadline.
	a.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	if err := Sendmsg(rc, msg, nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Sendmsg on a full socket past its deadline: %v", err)
	}
}

func TestFstatOfAClosedFile(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	var st unix.Stat_t
	if err := Fstat(f, &st); err == nil {
		t.Fatal("Fstat of a closed file succeeded")
	}
}
