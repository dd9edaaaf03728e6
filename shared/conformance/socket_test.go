//go:build unix

package conformance

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/launch"
)

// The host reaches a plugin over a socket in a directory that only its
// user can enter, which is what stands in for TLS, and the directory goes
// when the plugin does.
func TestPluginSocketIsPrivate(t *testing.T) {
	c, err := launch.NewClient(launch.Config{Path: bin("eicar")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	s, err := launch.Dispense(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	content := []byte("a clean file\n")
	if res, err := s.Scan(ctx, shared.Artifact{ID: "a", Type: shared.ArtifactFile, Size: int64(len(content)), Content: bytes.NewReader(content)}); err != nil || res.Verdict != shared.VerdictBenign {
		t.Fatalf("scan over the private socket: %+v, %v", res, err)
	}
	addr := c.ReattachConfig().Addr
	if addr.Network() != "unix" {
		t.Fatalf("the plugin listens on %s %s, want a unix socket", addr.Network(), addr)
	}
	dir := filepath.Dir(addr.String())
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("the socket's directory %s has mode %v, want 0700", dir, perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Getuid() {
		t.Errorf("the socket's directory %s is not owned by uid %d", dir, os.Getuid())
	}
	c.Kill()
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the socket's directory %s outlived the plugin: %v", dir, err)
	}
}
