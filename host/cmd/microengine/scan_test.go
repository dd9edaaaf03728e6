package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
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
