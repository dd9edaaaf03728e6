package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// spoolBufSize is the copy buffer for spooling: the scan holds one such
// buffer, never the artifact.
const spoolBufSize = 256 << 10

// spoolBufs recycles copy buffers between scans (a pointer, so Put does
// not allocate).
type spoolBufs struct{ p sync.Pool }

func newSpoolBufs() *spoolBufs {
	return &spoolBufs{p: sync.Pool{New: func() any { b := make([]byte, spoolBufSize); return &b }}}
}

func (b *spoolBufs) get() *[]byte  { return b.p.Get().(*[]byte) }
func (b *spoolBufs) put(p *[]byte) { b.p.Put(p) }

// openSpool opens a file no other process can find: O_TMPFILE (Linux 3.11+,
// most file systems) has no name at all; elsewhere a named temporary file
// is unlinked at once. Either way the space is freed when the last
// descriptor closes, even if the plugin is killed mid-scan.
func openSpool(dir string) (*os.File, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), dir+"/(spool)"), nil
	}
	f, err := os.CreateTemp(dir, "microengine-yara-*")
	if err != nil {
		return nil, fmt.Errorf("spool file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool file: %w", err)
	}
	return f, nil
}

// errContent marks a failure to read the artifact (as opposed to writing
// the spool file).
var errContent = errors.New("reading the artifact")

// spoolTo copies r into f, checking ctx between reads, and returns the
// bytes written.
func spoolTo(ctx context.Context, f *os.File, head []byte, r io.Reader, buf []byte) (int64, error) {
	var n int64
	if len(head) > 0 {
		w, err := f.Write(head)
		n += int64(w)
		if err != nil {
			return n, fmt.Errorf("spool file: %w", err)
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := r.Read(buf)
		if m > 0 {
			w, err := f.Write(buf[:m])
			n += int64(w)
			if err != nil {
				return n, fmt.Errorf("spool file: %w", err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("%w: %w", errContent, rerr)
		}
	}
}
