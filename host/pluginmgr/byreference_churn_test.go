package pluginmgr_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/internal/churn"
	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/internal/testbin"
	"github.com/microengine/microengine/shared"
)

// descriptorsUnder lists pid's descriptors open on files under dir.
func descriptorsUnder(pid int, dir string) []string {
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

// Files passed by reference to the real clamav plugin, 32 at once, while
// a fifth are cancelled, clamd is killed and started again and the
// plugin process is killed (and relaunched): no verdict is the opposite
// of the file's, and afterwards neither the host nor the plugin keeps a
// descriptor of any of the files. (clamd 1.4 itself may keep one: a
// FILDES whose connection the killed plugin dropped with the descriptor
// received stayed open in clamd, in 1 run of ~17.)
func TestByReferenceUnderChurnLeavesNoDescriptors(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clamd twice")
	}
	clamav := testbin.BuildT(t, "microengine-plugin-clamav", "./plugins/clamav")
	ctx, cancelAll := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancelAll()
	clamd := devclamd.StartRestartable(t, ctx, devclamd.Options{})
	f := newNamedFixture(t, "clamav", clamav, fmt.Sprintf("  config {\n    address = %q\n  }", clamd.Current().Address()))
	m := f.start(fastOptions)
	eng := engine.New(m)

	dir := t.TempDir()
	const files = 200
	marker := "MICROENGINE-TEST-" + "MARKER-ALPHA"
	for i := range files {
		content := fmt.Sprintf("plain text %d %s\n", i, strings.Repeat("abc ", rand.IntN(2000)))
		if i%5 == 0 {
			content += marker
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var run churn.Run
	scanAll := func(rounds int, churning bool) {
		run.Scan(32, files, rounds, func(i int) {
			fl, err := os.Open(filepath.Join(dir, fmt.Sprint(i)))
			if err != nil {
				t.Error(err)
				return
			}
			defer fl.Close()
			st, _ := fl.Stat()
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if churning && rand.IntN(5) == 0 {
				time.AfterFunc(time.Duration(rand.IntN(3000))*time.Microsecond, cancel)
			}
			r := eng.Scan(sctx, engine.Artifact{ID: fmt.Sprint(i), Type: shared.ArtifactFile, Size: st.Size(), Content: fl})
			cancel()
			want := shared.VerdictBenign
			if i%5 == 0 {
				want = shared.VerdictMalicious
			}
			if r.Verdict != want && (!churning || r.Verdict != shared.VerdictUnknown) {
				t.Errorf("file %d: %s (%s), want %s", i, r.Verdict, r.Reason, want)
			}
		})
	}
	// Warm: the plugin is up and has probed its clamd.
	scanAll(1, false)
	const rounds = 5
	var killed atomic.Int64
	churnDone := make(chan struct{})
	go func() {
		defer close(churnDone)
		waitFor := func(n int64) bool { return run.WaitFor(ctx, n) }
		base := int64(files)
		total := int64(files * rounds)
		if !waitFor(base + total/5) {
			return
		}
		if err := clamd.Restart(ctx); err != nil {
			t.Errorf("restart clamd: %v", err)
			return
		}
		if !waitFor(base + total*3/5) {
			return
		}
		killed.Store(int64(status(t, m).PID))
		syscall.Kill(int(killed.Load()), syscall.SIGKILL)
	}()
	scanAll(rounds, true)
	<-churnDone
	// Back to normal, on the relaunched plugin.
	scanAll(1, false)
	if pid := status(t, m).PID; killed.Load() <= 0 || int64(pid) == killed.Load() {
		t.Fatalf("plugin pid %d, killed %d: the plugin was not killed and relaunched", pid, killed.Load())
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		pluginPid := status(t, m).PID
		host, plugin := descriptorsUnder(os.Getpid(), dir), descriptorsUnder(pluginPid, dir)
		if len(host)+len(plugin) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("descriptors of the files still open: host %d, plugin %d", len(host), len(plugin))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
