package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Spooling stdin ends with the scan's context even while the writer
// keeps stdin open (SIGTERM during `producer | microengine scan -`), and
// otherwise keeps all of it, hashed.
func TestSpoolEndsWithItsContext(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		pw.Write([]byte("part of it"))
		// The copy has read it and waits for more, which never comes.
		cancel()
	}()
	if _, _, _, _, err := spool(ctx, pr, true); !errors.Is(err, context.Canceled) {
		t.Fatalf("spool with the writer still there, cancelled: %v, want context.Canceled", err)
	}

	const content = "all of it\n"
	f, n, sum, cleanup, err := spool(context.Background(), strings.NewReader(content), true)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	want := sha256.Sum256([]byte(content))
	got, _ := io.ReadAll(io.NewSectionReader(f, 0, n))
	if string(got) != content || sum != hex.EncodeToString(want[:]) {
		t.Fatalf("spooled %q, sha256 %s; want %q, %x", got, sum, content, want)
	}
}

// A worker's hashing buffer grows with the files it hashes, and every
// size hashes to the content's sha256, whatever the buffer held before.
func TestFileSHA256GrowsItsBuffer(t *testing.T) {
	dir := t.TempDir()
	var buf []byte
	for _, size := range []int{0, 1, 4096, 16<<10 + 1, 64 << 10, 64<<10 + 1, 200 << 10, 10} {
		content := make([]byte, size)
		for i := range content {
			content[i] = byte(i*7 + size)
		}
		path := filepath.Join(dir, fmt.Sprint(size))
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fileSHA256(f, int64(size), hashBuffer(&buf, int64(size)))
		f.Close()
		want := sha256.Sum256(content)
		if err != nil || got != hex.EncodeToString(want[:]) {
			t.Fatalf("%d bytes: %s, %v; want %x", size, got, err, want)
		}
		if len(buf) > hashBufferSize || (size <= hashBufferSize && len(buf) < size) {
			t.Fatalf("%d bytes: a buffer of %d", size, len(buf))
		}
	}
}
