package scanner

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/rawio"
)

// clamd (1.4.6) sizes a zip member by its local header, where most other
// unzippers (Python's zipfile, Go's archive/zip, 7-Zip) go by the central
// directory. A member whose local header gives another compressed size is
// skipped without an alert, whatever the limits: the marker in a zip with
// a zip64 local header (size 0xFFFFFFFF, what Python's zipfile writes with
// force_zip64) answered OK, and so did a member whose local size was
// patched to 5 or 100000 bytes — each extracted by Python as it was.
// zipSniffer sees the zip headers of the content as it goes to clamd, so
// that such an OK is not taken for benign. It looks at the artifact
// itself, not into its members: a zip like that nested in another is not
// seen.

// Zip header layouts (APPNOTE 4.3.7 and 4.3.12): the fixed parts.
const (
	zipLocalLen       = 30
	zipCentralLen     = 46
	zipFlagDescriptor = 0x8 // sizes follow the data; clamd then uses the central ones
	zipSizeZip64      = 0xFFFFFFFF
	// zipHeadersMax bounds the headers recorded for one artifact: content
	// that repeats "PK\x03\x04" every 4 bytes would otherwise grow the
	// map by one entry per 4 bytes (some 30 bytes each), and a file sent
	// by reference is not held to StreamMaxLength. 2^18 headers (131,072
	// members, more than the largest jars) cost at most ~8 MB; beyond it
	// the artifact is not checked, so its OK is not taken for benign.
	zipHeadersMax = 1 << 18
)

var (
	zipLocalSig   = []byte("PK\x03\x04")
	zipCentralSig = []byte("PK\x01\x02")
)

type zipLocal struct {
	flags uint16
	csize uint32
}

type zipCentral struct {
	csize  uint32
	offset uint32 // of the member's local header
}

// zipSniffer passes content through and records its zip headers.
type zipSniffer struct {
	r        io.Reader
	n        int64 // bytes read
	tail     []byte
	buf      []byte
	locals   map[int64]zipLocal
	centrals []zipCentral
	overflow bool // more than zipHeadersMax headers: not all recorded
	// ahead, when set, gets what the check of the file by reference
	// found; it was started beside clamd's scan (readAhead).
	ahead <-chan string
}

func newZipSniffer(r io.Reader) *zipSniffer {
	return &zipSniffer{r: r}
}

// reset starts again on r: the content is being sent again.
func (z *zipSniffer) reset(r io.Reader) {
	*z = zipSniffer{r: r, buf: z.buf[:0], ahead: z.ahead}
}

// readAhead starts the check of a's file for members clamd skips, beside
// clamd's scan of it by reference rather than after clamd's answer: on a
// 200 MiB file the read back in 8 KiB preads took 0.5-1 s after clamd
// answered, half as long again as clamd's own scan. ctx ends the check
// (the scan's, not an attempt's).
func (z *zipSniffer) readAhead(ctx context.Context, a shared.Artifact) {
	if z.ahead != nil || a.File == nil || a.Size <= zipReadWhole {
		return
	}
	ch := make(chan string, 1)
	z.ahead = ch
	go func() { ch <- fileZipSkipped(ctx, a) }()
}

func (z *zipSniffer) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	if n > 0 {
		z.look(p[:n])
	}
	return n, err
}

// look finds the headers in b. A header cut by the end of b is kept in
// tail (the last zipCentralLen-1 bytes) and found whole in the next read.
func (z *zipSniffer) look(b []byte) {
	if z.overflow {
		z.n += int64(len(b))
		return
	}
	start := z.n - int64(len(z.tail))
	z.n += int64(len(b))
	buf := b
	if len(z.tail) > 0 {
		// A header may straddle the reads: b is looked at after the
		// end of the last one. The first read, a small file's only
		// one, is looked at where it is (its copy was 4 KiB of garbage
		// an artifact).
		z.buf = append(append(z.buf[:0], z.tail...), b...)
		buf = z.buf
	}
	for i := 0; ; {
		j := bytes.Index(buf[i:], zipLocalSig[:2])
		if j < 0 {
			break
		}
		i += j
		h := buf[i:]
		if len(z.centrals)+len(z.locals) >= zipHeadersMax && len(h) >= zipCentralLen &&
			(bytes.HasPrefix(h, zipCentralSig) || bytes.HasPrefix(h, zipLocalSig)) {
			z.overflow = true
			break
		}
		switch {
		case len(h) >= zipCentralLen && bytes.HasPrefix(h, zipCentralSig):
			z.centrals = append(z.centrals, zipCentral{
				csize:  binary.LittleEndian.Uint32(h[20:]),
				offset: binary.LittleEndian.Uint32(h[42:]),
			})
		case len(h) >= zipCentralLen && bytes.HasPrefix(h, zipLocalSig):
			if z.locals == nil {
				z.locals = map[int64]zipLocal{}
			}
			z.locals[start+int64(i)] = zipLocal{
				flags: binary.LittleEndian.Uint16(h[6:]),
				csize: binary.LittleEndian.Uint32(h[18:]),
			}
		case len(h) < zipCentralLen:
			// Cut short: it is in the tail, looked at again next time.
			i = len(buf)
			continue
		}
		i += 2
	}
	keep := min(len(buf), zipCentralLen-1)
	z.tail = append(z.tail[:0], buf[len(buf)-keep:]...)
}

// skipped says which zip member clamd does not read, if any: one whose
// local header gives a compressed size other than the central directory's
// (or the zip64 mark), with no data descriptor.
func (z *zipSniffer) skipped() string {
	if z.overflow {
		return fmt.Sprintf("it holds more than %d zip headers, more than are checked", zipHeadersMax)
	}
	for _, c := range z.centrals {
		l, ok := z.locals[int64(c.offset)]
		if !ok || l.flags&zipFlagDescriptor != 0 {
			continue
		}
		if l.csize == zipSizeZip64 || l.csize != c.csize {
			return fmt.Sprintf("the zip member at offset %d gives %d compressed bytes in its local header and %d in the central directory: clamd goes by the local header and skips such a member without an alert", c.offset, l.csize, c.csize)
		}
	}
	return ""
}

// zipSkipped runs the artifact's content through a zipSniffer when clamd
// read it itself (by reference), and says what zs, or that one, found.
// A small file is read back into a buffer from bufs.
func zipSkipped(a shared.Artifact, zs *zipSniffer, bufs *sync.Pool) string {
	if zs != nil && zs.n > 0 || a.File == nil || a.Size <= 0 {
		if zs == nil {
			return ""
		}
		return zs.skipped()
	}
	if zs != nil && zs.ahead != nil {
		return <-zs.ahead
	}
	if a.Size <= zipPooledBuf && bufs != nil {
		// Not a new buffer a scan: 4 KiB of garbage each for 4 KiB
		// files, read once and dropped.
		buf, _ := bufs.Get().(*[]byte)
		if buf == nil {
			b := make([]byte, zipPooledBuf)
			buf = &b
		}
		defer bufs.Put(buf)
		return fileZipSkippedInto(context.Background(), a, *buf)
	}
	return fileZipSkipped(context.Background(), a)
}

// fileZipSkipped reads a's file through a zipSniffer, in large reads (one
// for a small file: io.Copy took a second one to see the end), and says
// what it found.
func fileZipSkipped(ctx context.Context, a shared.Artifact) string {
	return fileZipSkippedInto(ctx, a, nil)
}

// fileZipSkippedInto is fileZipSkipped reading into buf when it holds the
// whole file.
func fileZipSkippedInto(ctx context.Context, a shared.Artifact, buf []byte) string {
	fz := newZipSniffer(nil)
	if int64(len(buf)) < a.Size {
		buf = make([]byte, min(a.Size, zipReadChunk))
	}
	for off := int64(0); off < a.Size; {
		if err := ctx.Err(); err != nil {
			return fmt.Sprintf("the check of its zip headers was cut short: %v", err)
		}
		var n int
		var err error
		if a.Size <= zipReadWhole {
			// Read back right after clamd read it: cached, and a read
			// through package syscall would wake the runtime's sysmon
			// (see package rawio).
			n, err = rawio.ReadAt(a.File, buf[:a.Size-off], off)
		} else {
			n, err = a.File.ReadAt(buf[:min(int64(len(buf)), a.Size-off)], off)
		}
		fz.look(buf[:n])
		off += int64(n)
		if err != nil && !(err == io.EOF && off == a.Size) {
			return fmt.Sprintf("the file could not be read back to check its zip headers: %v", err)
		}
	}
	return fz.skipped()
}

// zipReadWhole: a file up to this size is read back in one call, after
// clamd's answer; a larger one is read beside clamd's scan (readAhead).
// zipReadChunk is the size of the reads.
const (
	zipReadWhole = 64 << 10
	zipReadChunk = 1 << 20
	// zipPooledBuf: files up to this size are read back into a buffer
	// kept for the next scan.
	zipPooledBuf = 16 << 10
)
