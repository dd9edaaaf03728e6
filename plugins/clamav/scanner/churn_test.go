package scanner

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/churn"
	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/shared"
)

// Artifacts by reference scanned many at once while a fifth are
// cancelled, clamd reloads its signatures and is killed and started
// again: a malicious file is never answered benign nor a benign one
// malicious, a scan clamd did not answer is unknown or the context's
// error, and once clamd is back every file gets its own verdict again.
func TestScanByReferenceUnderChurnKeepsVerdictsWithTheirFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clamd twice")
	}
	ctx, cancelAll := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancelAll()
	clamd := devclamd.StartRestartable(t, ctx, devclamd.Options{})
	s := configured(t, clamd.Current().Address())
	// The probes of clamd's limits pass first: until then binary
	// artifacts are streamed, not passed by reference.
	if r := scan(t, s, file(randomBytes(4096, 9))); r.Verdict != shared.VerdictBenign {
		t.Fatalf("warm-up: %+v", r)
	}

	dir := t.TempDir()
	const files = 300
	for i := range files {
		content := fmt.Appendf(randomBytes(100+rand.IntN(4000), uint64(i)), "\nfile %d\n", i)
		if i%5 == 0 {
			content = append(content, markerAlpha...)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var run churn.Run
	scanAll := func(rounds int, churning bool) (unknown int64) {
		var unknowns atomic.Int64
		run.Scan(32, files, rounds, func(i int) {
			f, err := os.Open(filepath.Join(dir, fmt.Sprint(i)))
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			st, _ := f.Stat()
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if churning && rand.IntN(5) == 0 {
				time.AfterFunc(time.Duration(rand.IntN(2000))*time.Microsecond, cancel)
			}
			a := shared.Artifact{ID: fmt.Sprint(i), Type: shared.ArtifactFile, Size: st.Size(), File: f, Content: io.NewSectionReader(f, 0, st.Size())}
			r, err := s.Scan(sctx, a)
			cancel()
			want := shared.VerdictBenign
			if i%5 == 0 {
				want = shared.VerdictMalicious
			}
			switch {
			case err != nil && sctx.Err() != nil:
			case err != nil:
				t.Errorf("file %d: %v (only the end of its context is an error)", i, err)
			case r.Verdict == shared.VerdictUnknown && churning:
				unknowns.Add(1)
			case r.Verdict != want:
				t.Errorf("file %d: %s (%s), want %s", i, r.Verdict, r.Reason, want)
			}
		})
		return unknowns.Load()
	}
	const rounds = 4
	churnDone := make(chan struct{})
	go func() {
		defer close(churnDone)
		waitFor := func(n int64) bool { return run.WaitFor(ctx, n) }
		total := int64(files * rounds)
		if !waitFor(total / 5) {
			return
		}
		if err := clamd.Current().Reload(ctx); err != nil {
			t.Errorf("RELOAD: %v", err)
		}
		if !waitFor(total * 2 / 5) {
			return
		}
		if err := clamd.Restart(ctx); err != nil {
			t.Errorf("restart clamd: %v", err)
		}
	}()
	unknown := scanAll(rounds, true)
	<-churnDone
	t.Logf("%d unknown of %d under churn", unknown, files*rounds)
	// Back to normal: every file is answered its own verdict. (The
	// scanner may take the restarted clamd for down until its next
	// check; the first scans then check at once.)
	if u := scanAll(1, false); u != 0 {
		t.Errorf("%d unknown after the churn", u)
	}
}
