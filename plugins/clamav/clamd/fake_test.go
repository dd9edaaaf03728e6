package clamd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// fakeClamd is a scripted clamd on a unix socket, for what a real one will
// not do on demand: stall, answer garbage, hang up mid-reply.
type fakeClamd struct {
	t    *testing.T
	ln   net.Listener
	path string
	wg   sync.WaitGroup
}

// startFake serves each connection with handle until the test ends.
func startFake(t *testing.T, handle func(conn net.Conn)) *fakeClamd {
	t.Helper()
	// A short folder: t.TempDir() can exceed a socket path's 108 bytes.
	dir, err := os.MkdirTemp("", "fakeclamd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return startFakeAt(t, filepath.Join(dir, "clamd.sock"), handle)
}

// startFakeAt is startFake on a given socket path.
func startFakeAt(t *testing.T, path string, handle func(conn net.Conn)) *fakeClamd {
	f := &fakeClamd{t: t, path: path}
	var err error
	f.ln, err = net.Listen("unix", f.path)
	if err != nil {
		t.Error(err)
		return f
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			conn, err := f.ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer conn.Close()
				handle(conn)
			}()
		}
	}()
	t.Cleanup(func() {
		f.ln.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeClamd) address() string { return "unix://" + f.path }

// stream is what a fake clamd read of one INSTREAM.
type stream struct {
	command    string
	chunks     []int // chunk sizes, terminator excluded
	content    []byte
	terminated bool
	err        error
}

// readInstream reads an INSTREAM command and its chunks as clamd does,
// until the zero-length chunk, at most limit content bytes (0: no limit).
func readInstream(conn net.Conn, limit int) stream {
	var s stream
	cmd := make([]byte, len(cmdInstream))
	if _, err := io.ReadFull(conn, cmd); err != nil {
		s.err = err
		return s
	}
	s.command = string(cmd)
	return readChunks(conn, limit, s)
}

// readChunks reads an INSTREAM's chunks after its command, into s.
func readChunks(conn net.Conn, limit int, s stream) stream {
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			s.err = err
			return s
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		if n == 0 {
			s.terminated = true
			return s
		}
		if limit > 0 && len(s.content)+n > limit {
			s.err = errors.New("over the limit")
			return s
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(conn, buf); err != nil {
			s.err = err
			return s
		}
		s.chunks = append(s.chunks, n)
		s.content = append(s.content, buf...)
	}
}

// readCommand reads a NUL-terminated command.
func readCommand(conn net.Conn) string {
	var b bytes.Buffer
	one := make([]byte, 1)
	for {
		if _, err := conn.Read(one); err != nil {
			return b.String()
		}
		b.WriteByte(one[0])
		if one[0] == 0 {
			return b.String()
		}
	}
}
