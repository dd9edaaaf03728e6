package marketplace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/verdictcache"
	"github.com/microengine/microengine/shared"
)

// eicarPlugin is an engine plugin: content holding EICAR is malicious. It
// counts its scans.
type eicarPlugin struct{ scans *atomic.Int32 }

func (eicarPlugin) Name() string { return "eicar" }
func (eicarPlugin) Info() shared.Info {
	return shared.Info{Name: "eicar", Version: "1.0.0", SignaturesVersion: "1", ArtifactTypes: []shared.ArtifactType{shared.ArtifactFile}}
}
func (eicarPlugin) Timeout() time.Duration { return 0 }
func (p eicarPlugin) Scan(_ context.Context, a shared.Artifact) (shared.Result, error) {
	p.scans.Add(1)
	b, err := io.ReadAll(a.Content)
	if err != nil {
		return shared.Unknown("read: %v", err), nil
	}
	if strings.Contains(string(b), "EICAR") {
		return shared.Result{Verdict: shared.VerdictMalicious, Confidence: 1, MalwareFamily: "EICAR-Test-File"}, nil
	}
	return shared.Result{Verdict: shared.VerdictBenign, Confidence: 1}, nil
}

type onePlugin []engine.Plugin

func (p onePlugin) Plugins() []engine.Plugin { return p }

// A bounty whose announced sha256 is cached is answered without fetching
// its artifact (here: the link leads nowhere), unless trust_bounty_sha256
// is off; then it is fetched, checked, and only then the cache answers.
func TestCachedBountiesAreNotFetched(t *testing.T) {
	var scans atomic.Int32
	cache := verdictcache.New(verdictcache.Config{TTL: time.Hour, MaxEntries: 100}, "", nil)
	content := []byte("xx EICAR yy")
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	for _, trust := range []bool{true, false} {
		eng := engine.New(onePlugin{eicarPlugin{&scans}}).WithCache(cache, trust)
		e := newTestEngine(t, eng)
		base := int64(100)
		if !trust {
			base = 200
		}
		uri := e.market.put("a", content)
		e.accept(t, e.market.bountyJSON(base+1, uri, 30*time.Second, map[string]any{"sha256": sha}))
		if a := e.market.wait(5 * time.Second); str(a.Body["verdict"]) != "malicious" {
			t.Fatalf("trust %v: first bounty %s", trust, a.Raw)
		}
		gone := e.market.srv.URL + "/artifacts/gone"
		e.accept(t, e.market.bountyJSON(base+2, gone, 30*time.Second, map[string]any{"sha256": sha}))
		a := e.market.wait(5 * time.Second)
		switch {
		case trust && str(a.Body["verdict"]) != "malicious":
			t.Fatalf("a cached sha256 was fetched (and failed): %s", a.Raw)
		case !trust && str(a.Body["verdict"]) != "unknown":
			t.Fatalf("trust_bounty_sha256 off, yet answered without the artifact: %s", a.Raw)
		}
		// With the artifact there, the cache answers after the fetch.
		e.accept(t, e.market.bountyJSON(base+3, uri, 30*time.Second, map[string]any{"sha256": sha}))
		if a := e.market.wait(5 * time.Second); str(a.Body["verdict"]) != "malicious" {
			t.Fatalf("trust %v: third bounty %s", trust, a.Raw)
		}
	}
	if n := scans.Load(); n != 1 {
		t.Errorf("the plugin scanned %d times; once should have filled the cache for every bounty after", n)
	}
	if s := cache.Stats(); s.Hits != 4 {
		t.Errorf("cache stats %+v, want 4 hits", s)
	}
}
