package shared

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// exclusiveSeen is what a plugin saw of an artifact passed with
// FileExclusive.
type exclusiveSeen struct {
	viaFile    []byte
	accessMode int
	writeErr   error
	streamed   bool
}

// scanExclusive scans f (size bytes of content) with FileExclusive, over
// the descriptor socket, or the batch socket with batches, and returns
// what the plugin saw. The plugin reads the file through its descriptor,
// which moves that descriptor's offset.
func scanExclusive(t *testing.T, batches bool, f *os.File, size int64) exclusiveSeen {
	t.Helper()
	got := make(chan exclusiveSeen, 1)
	impl := &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		var s exclusiveSeen
		if a.File == nil {
			s.streamed = true
			s.viaFile, _ = io.ReadAll(a.Content)
		} else {
			s.viaFile, _ = io.ReadAll(a.File)
			flags, _ := unix.FcntlInt(a.File.Fd(), unix.F_GETFL, 0)
			s.accessMode = flags & unix.O_ACCMODE
			_, s.writeErr = a.File.WriteAt([]byte("x"), 0)
		}
		got <- s
		return Result{Verdict: VerdictBenign, Confidence: 1}, nil
	}}
	connectFn := connectByReference
	if batches {
		connectFn = connectByBatches
	}
	c := connectFn(t, impl)
	res, err := c.Scan(context.Background(), Artifact{
		ID: "a", Type: ArtifactFile, Size: size, File: f, FileExclusive: true,
		Content: io.NewSectionReader(f, 0, size),
	})
	if err != nil || res.Verdict != VerdictBenign {
		t.Fatalf("scan: %+v, %v", res, err)
	}
	return <-got
}

// hostOffset is f's file offset.
func hostOffset(t *testing.T, f *os.File) int64 {
	t.Helper()
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		t.Fatal(err)
	}
	return off
}

// A file the host opened read-only for this scan alone goes to the plugin
// as it is: no second open. The plugin still cannot write, the host's
// descriptor stays the host's (open, and the only one on the file once
// the scan is answered).
func TestByReferenceExclusiveReadOnlyFileIsPassedAsItIs(t *testing.T) {
	for _, batches := range []bool{false, true} {
		t.Run(map[bool]string{false: "one_by_one", true: "batches"}[batches], func(t *testing.T) {
			content := bytes.Repeat([]byte("exclusive "), 500)
			path := filepath.Join(t.TempDir(), "artifact")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			s := scanExclusive(t, batches, f, int64(len(content)))
			if s.streamed || !bytes.Equal(s.viaFile, content) {
				t.Fatalf("streamed %v, the plugin read %d bytes, want %d by reference", s.streamed, len(s.viaFile), len(content))
			}
			if s.accessMode != unix.O_RDONLY || s.writeErr == nil {
				t.Fatalf("the plugin's descriptor has access mode %d and a write gave %v: want read-only", s.accessMode, s.writeErr)
			}
			// The plugin's reads moved the offset the host sees: the
			// plugin had the host's own open file description.
			if off := hostOffset(t, f); off != int64(len(content)) {
				t.Fatalf("the host's offset is %d after the plugin read the file, want %d: the file was opened again", off, len(content))
			}
			if _, err := f.ReadAt(make([]byte, 1), 0); err != nil {
				t.Fatalf("the host's descriptor after the scan: %v", err)
			}
			waitFor(t, func() bool { return openDescriptorsOf(t, path) == 1 })
		})
	}
}

// A writable descriptor is never passed, even marked exclusive: the
// plugin gets a new read-only one, with an offset of its own.
func TestByReferenceExclusiveWritableFileIsOpenedAgain(t *testing.T) {
	for _, batches := range []bool{false, true} {
		t.Run(map[bool]string{false: "one_by_one", true: "batches"}[batches], func(t *testing.T) {
			content := bytes.Repeat([]byte("spooled "), 500)
			f := artifactFile(t, content) // read-write, as the marketplace's spool
			if _, err := f.Seek(3, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			s := scanExclusive(t, batches, f, int64(len(content)))
			if s.streamed || !bytes.Equal(s.viaFile, content) {
				t.Fatalf("streamed %v, the plugin read %d bytes, want %d by reference", s.streamed, len(s.viaFile), len(content))
			}
			if s.accessMode != unix.O_RDONLY || s.writeErr == nil {
				t.Fatalf("the plugin's descriptor has access mode %d and a write gave %v: want read-only", s.accessMode, s.writeErr)
			}
			if off := hostOffset(t, f); off != 3 {
				t.Fatalf("the host's offset moved to %d: the plugin shares it", off)
			}
			after, _ := os.ReadFile(f.Name())
			if !bytes.Equal(after, content) {
				t.Fatal("the artifact changed")
			}
			waitFor(t, func() bool { return openDescriptorsOf(t, f.Name()) == 1 })
		})
	}
}

// An O_PATH descriptor reads as O_RDONLY but cannot be read: it is
// opened again, and the plugin gets one it can read.
func TestByReferenceExclusivePathDescriptorIsOpenedAgain(t *testing.T) {
	content := []byte(strings.Repeat("o_path ", 300))
	path := filepath.Join(t.TempDir(), "artifact")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	got := make(chan exclusiveSeen, 1)
	c := connectByReference(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		var s exclusiveSeen
		if a.File == nil {
			s.streamed = true
		} else {
			s.viaFile, _ = io.ReadAll(a.File)
		}
		got <- s
		return Result{Verdict: VerdictBenign, Confidence: 1}, nil
	}})
	res, err := c.Scan(context.Background(), Artifact{
		ID: "a", Type: ArtifactFile, Size: int64(len(content)), File: f, FileExclusive: true,
		Content: bytes.NewReader(content),
	})
	if err != nil || res.Verdict != VerdictBenign {
		t.Fatalf("scan: %+v, %v", res, err)
	}
	if s := <-got; s.streamed || !bytes.Equal(s.viaFile, content) {
		t.Fatalf("streamed %v, the plugin read %d bytes through its descriptor, want %d", s.streamed, len(s.viaFile), len(content))
	}
}

// A file that does not hold the artifact's size is streamed, exclusive or
// not: what the plugin scans is what the host announced.
func TestByReferenceExclusiveWrongSizeIsStreamed(t *testing.T) {
	content := bytes.Repeat([]byte("size "), 100)
	path := filepath.Join(t.TempDir(), "artifact")
	if err := os.WriteFile(path, append(bytes.Clone(content), "tail"...), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := scanExclusive(t, true, f, int64(len(content)))
	if !s.streamed || !bytes.Equal(s.viaFile, content) {
		t.Fatalf("streamed %v, %d bytes: want the announced %d bytes streamed", s.streamed, len(s.viaFile), len(content))
	}
}
