package clamd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/devclamd"
)

// openFile writes content to a file and opens it read-only, as a plugin
// gets an artifact by reference.
func openFile(t *testing.T, dir, name string, content []byte) *os.File {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// descriptorsOf lists pid's descriptors open on files under dir.
func descriptorsOf(pid int, dir string) []string {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, _ := os.ReadDir(fdDir)
	var out []string
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
			out = append(out, target)
		}
	}
	return out
}

func TestFildesAgainstRealClamd(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{TCP: true})
	dir := t.TempDir()
	ctx := testContext(t)
	malicious := openFile(t, dir, "eicar", eicar())
	clean := openFile(t, dir, "clean", []byte("nothing to see here\n"))
	zipped := openFile(t, dir, "zipped.zip", zipOf(t, "inner.txt", []byte("xx "+markerZipped+" yy"), 8))
	empty := openFile(t, dir, "empty", nil)

	for _, sessions := range []int{0, 2} {
		t.Run(fmt.Sprintf("sessions=%d", sessions), func(t *testing.T) {
			c := newTestClient(t, d.Address(), Options{Sessions: sessions})
			if !c.CanFildes() {
				t.Fatal("a unix-socket clamd should take descriptors")
			}
			for round := 1; round <= 2; round++ {
				r, err := c.Fildes(ctx, malicious)
				if err != nil || r.Status != StatusFound || !strings.Contains(strings.ToUpper(r.Signature), "EICAR") {
					t.Fatalf("eicar: %+v, %v", r, err)
				}
				if !strings.HasPrefix(r.Raw, "fd[") {
					t.Errorf("raw reply %q", r.Raw)
				}
				if sessions > 0 && r.Session != 2*round-1 {
					t.Errorf("round %d: session command %d, want %d (the kept session reused)", round, r.Session, 2*round-1)
				}
				r, err = c.Fildes(ctx, clean)
				if err != nil || r.Status != StatusOK || r.ContentBytes != 20 {
					t.Fatalf("clean: %+v, %v", r, err)
				}
			}
			if r, err := c.Fildes(ctx, zipped); err != nil || r.Status != StatusFound {
				t.Fatalf("zipped marker: %+v, %v", r, err)
			}
			if r, err := c.Fildes(ctx, empty); err != nil || r.Status != StatusOK {
				t.Fatalf("empty: %+v, %v", r, err)
			}
		})
	}

	t.Run("the descriptor is clamd's only while it scans", func(t *testing.T) {
		c := newTestClient(t, d.Address(), Options{Sessions: 4})
		for i := 0; i < 20; i++ {
			if _, err := c.Fildes(ctx, clean); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for held := descriptorsOf(d.Pid(), dir); len(held) > 0; held = descriptorsOf(d.Pid(), dir) {
			if time.Now().After(deadline) {
				t.Fatalf("clamd still holds %v after answering", held)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	t.Run("TCP cannot take a descriptor", func(t *testing.T) {
		c := newTestClient(t, d.TCPAddress(), Options{})
		if c.CanFildes() {
			t.Fatal("CanFildes over TCP")
		}
		if _, err := c.Fildes(ctx, clean); !errors.Is(err, ErrNoFildes) {
			t.Fatalf("got %v, want ErrNoFildes", err)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		c := newTestClient(t, d.Address(), Options{})
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.Fildes(cctx, clean); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

func TestParseFildesReply(t *testing.T) {
	for raw, want := range map[string]Status{
		"fd[12]: OK\x00":                   StatusOK,
		"fd[7]: Eicar-Signature FOUND\x00": StatusFound,
	} {
		r, err := ParseFildesReply([]byte(raw))
		if err != nil || r.Status != want {
			t.Errorf("%q: %+v, %v", raw, r, err)
		}
	}
	for _, raw := range []string{"fd[x]: OK\x00", "fd[3]: OK", "fd[3]: something ERROR\x00", "stream: OK\n\x00", "fd[3]OK\x00"} {
		if r, err := ParseFildesReply([]byte(raw)); err == nil {
			t.Errorf("%q parsed as %+v", raw, r)
		}
	}
}
