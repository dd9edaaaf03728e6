package pluginmgr_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/microengine/microengine/host/engine"
	pluginlaunch "github.com/microengine/microengine/shared/launch"
)

// pinnedDirs lists the manager's folders of pinned copies under tmp.
func pinnedDirs(t *testing.T, tmp string) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(tmp, "microengine-pinned-*"))
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// The folder of verified copies exists only while a plugin is pinned, and
// goes with the manager; a run without pins makes none.
func TestPinnedCopiesFolderOnlyForPins(t *testing.T) {
	b := bins(t)
	sum, err := pluginlaunch.FileSHA256(b.eicarV1)
	if err != nil {
		t.Fatal(err)
	}
	for _, pinned := range []bool{false, true} {
		t.Run(fmt.Sprintf("pinned=%v", pinned), func(t *testing.T) {
			// Short: the plugins' sockets are made under it too.
			tmp, err := os.MkdirTemp("", "pd-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(tmp) })
			t.Setenv("TMPDIR", tmp)
			f := newFixture(t, b.eicarV1, "")
			if pinned {
				f.writeConfig(fmt.Sprintf("  sha256 = %q", sum))
			}
			m := f.start(fastOptions)
			if res := scanBytes(context.Background(), engine.New(m), []byte("clean")); res.Verdict != "benign" {
				t.Fatalf("verdict %s: %s", res.Verdict, res.Reason)
			}
			want := 0
			if pinned {
				want = 1
			}
			if dirs := pinnedDirs(t, tmp); len(dirs) != want {
				t.Fatalf("folders of pinned copies %v while running, want %d", dirs, want)
			}
			m.Close()
			if dirs := pinnedDirs(t, tmp); len(dirs) != 0 {
				t.Fatalf("folders of pinned copies %v left after Close", dirs)
			}
		})
	}
}
