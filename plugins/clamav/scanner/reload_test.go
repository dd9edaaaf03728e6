package scanner

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/plugins/clamav/daemon"
	"github.com/microengine/microengine/shared"
)

const markerCharlie = markerPrefix + "MARKER-CHARLIE"

// copySignatures copies the repo's test signatures into a folder the test
// may change.
func copySignatures(t *testing.T) string {
	t.Helper()
	src := repoSignatures(t)
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".md") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// bulkHashes writes n hash signatures of nothing in particular, so that
// loading them takes clamd a noticeable time.
func bulkHashes(t *testing.T, path string, n int) {
	t.Helper()
	var b strings.Builder
	for i := range n {
		sum := md5.Sum([]byte(fmt.Sprintf("bulk %d", i)))
		fmt.Fprintf(&b, "%s:%d:MicroEngine.Test.Bulk.%d\n", hex.EncodeToString(sum[:]), 1000+i, i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestManagedClamdReload: a new signature file in the database folder is
// loaded without a restart; while clamd reloads, an OK is unknown; after,
// the new signature detects.
func TestManagedClamdReload(t *testing.T) {
	sigs := copySignatures(t)
	s := configuredJSON(t, fmt.Sprintf(`{"database":%q}`, sigs))
	b := s.current.Load().backends[0]
	if r := scan(t, s, file([]byte(markerCharlie+"\n"))); r.Verdict != shared.VerdictBenign {
		t.Fatalf("before the new signatures: %+v", r)
	}

	bulkHashes(t, filepath.Join(sigs, "bulk.hdb"), 300000)
	line := "MicroEngine.Test.Marker.Charlie:0:*:" + hex.EncodeToString([]byte(markerCharlie)) + "\n"
	if err := os.WriteFile(filepath.Join(sigs, "charlie.ndb"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := b.managed.Wait(ctx, func(st daemon.Status) bool { return st.State == daemon.StateReloading }); err != nil {
		t.Fatalf("no reload: %v", err)
	}
	r := scan(t, s, file([]byte("plain text\n")))
	still := b.reloading()
	t.Logf("during the reload (still reloading after the scan: %v): %s %s", still, r.Verdict, r.Reason)
	if r.Verdict != shared.VerdictUnknown && still {
		t.Errorf("during the reload: %+v, want unknown", r)
	}
	if still && r.Metadata[shared.MetaComment] != shared.CommentSignaturesStale {
		t.Errorf("during the reload: %+v, want %s", r, shared.CommentSignaturesStale)
	}
	h, _ := s.Health(ctx)
	if b.reloading() && (h.Healthy || !strings.Contains(h.Message, "reloading")) {
		t.Errorf("Health during the reload = %+v", h)
	}
	if _, err := b.managed.Wait(ctx, func(st daemon.Status) bool { return st.State == daemon.StateReady }); err != nil {
		t.Fatalf("the reload did not finish: %v", err)
	}
	r = scan(t, s, file([]byte(markerCharlie+"\n")))
	if r.Verdict != shared.VerdictMalicious || !strings.HasPrefix(r.MalwareFamily, "MicroEngine.Test.Marker.Charlie") {
		t.Errorf("after the reload: %+v", r)
	}
	if r := scan(t, s, file([]byte("plain text\n"))); r.Verdict != shared.VerdictBenign {
		t.Errorf("after the reload: %+v, want benign", r)
	}
}

// TestManagedClamdLoading: until the managed clamd has loaded its
// signatures, health says so and scans are unknown, never benign.
func TestManagedClamdLoading(t *testing.T) {
	sigs := copySignatures(t)
	bulkHashes(t, filepath.Join(sigs, "bulk.hdb"), 300000)
	s := New(testLogger(t))
	// A short Configure: it returns before clamd is ready.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := s.Configure(ctx, []byte(fmt.Sprintf(`{"database":%q}`, sigs)))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeScanner(s) })
	b := s.current.Load().backends[0]
	if st := b.managed.Status(); st.State == daemon.StateStarting {
		r := scan(t, s, file([]byte("plain text\n")))
		loading := b.managed.Status().State == daemon.StateStarting
		if r.Verdict != shared.VerdictUnknown && loading {
			t.Errorf("while loading: %+v, want unknown", r)
		}
		h, _ := s.Health(context.Background())
		if b.managed.Status().State == daemon.StateStarting && (h.Healthy || !strings.Contains(h.Message, "loading its signatures")) {
			t.Errorf("Health while loading = %+v", h)
		}
		t.Logf("while loading: %s %s; health: %s", r.Verdict, r.Reason, h.Message)
	} else {
		t.Logf("clamd was ready before the first scan (%s): nothing to check while loading", st.State)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
	defer wcancel()
	if err := b.managed.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	if r := scan(t, s, file(EICAR())); r.Verdict != shared.VerdictMalicious {
		t.Errorf("once loaded: %+v", r)
	}
}

// TestManagedClamdBadDatabaseIsAConfigFault: a database clamd cannot load
// is refused by Configure at the database attribute, in clamd's words, and
// what served before keeps serving.
func TestManagedClamdBadDatabaseIsAConfigFault(t *testing.T) {
	good := copySignatures(t)
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "bad.ndb"), []byte("Broken.Sig:0:*:ZZZZ\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := configuredJSON(t, fmt.Sprintf(`{"database":%q}`, good))
	err := s.Configure(context.Background(), []byte(fmt.Sprintf(`{"database":%q}`, bad)))
	var ce *shared.ConfigError
	if !errors.As(err, &ce) || len(ce.Fields) != 1 || ce.Fields[0].Field != "database" || !strings.Contains(err.Error(), "Malformed database") {
		t.Fatalf("Configure with a bad database = %v, want a fault at database quoting clamd", err)
	}
	if r := scan(t, s, file(EICAR())); r.Verdict != shared.VerdictMalicious {
		t.Errorf("after the refused config: %+v", r)
	}
}
