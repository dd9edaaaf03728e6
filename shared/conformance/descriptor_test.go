package conformance

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/launch"
)

// A plugin process that dies while it holds an artifact by reference: the
// host's scan fails as the plugin being unavailable (never a verdict) and
// the host keeps no descriptor of the artifact but its own (/proc).
func TestByReferenceCrashMidScan(t *testing.T) {
	c, err := launch.NewClient(launch.Config{Path: bin("crashlarge")})
	if err != nil {
		t.Fatal(err)
	}
	defer launch.KillClient(c, 2*time.Second, hclog.NewNullLogger())
	sc, err := launch.Dispense(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := sc.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if !sc.ByReference() {
		t.Fatal("crashlarge declares ByReference, yet the host would stream to it")
	}
	path := filepath.Join(t.TempDir(), "large")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 16 << 20
	if _, err := io.Copy(f, newNoiseReader(size, 23)); err != nil {
		t.Fatal(err)
	}
	res, err := sc.Scan(ctx, shared.Artifact{ID: "large", Type: shared.ArtifactFile, Size: size, File: f, Content: io.NewSectionReader(f, 0, size)})
	if !errors.Is(err, shared.ErrPluginUnavailable) {
		t.Fatalf("scan on a plugin that crashed: %+v, %v; want ErrPluginUnavailable", res, err)
	}
	if held := descriptorsUnder(os.Getpid(), filepath.Dir(path)); len(held) != 1 {
		t.Fatalf("the host holds %v; want only the test's own descriptor", held)
	}
}
