package marketplace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
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

// cachedEngine starts an engine whose verdict cache holds content's
// verdict (trusting the bounty's sha256), and returns its sha256.
func cachedEngine(t *testing.T, content []byte, mods ...engineOption) (*testEngine, string) {
	t.Helper()
	var scans atomic.Int32
	cache := verdictcache.New(verdictcache.Config{TTL: time.Hour, MaxEntries: 100}, "", nil)
	e := newTestEngine(t, engine.New(onePlugin{eicarPlugin{&scans}}).WithCache(cache, true), mods...)
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	e.accept(t, e.market.bountyJSON(1, e.market.put("a", content), 30*time.Second, map[string]any{"sha256": sha}))
	if a := e.market.wait(5 * time.Second); str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("the bounty that fills the cache: %s", a.Raw)
	}
	e.record(t, 1, PhaseAssertion)
	return e, sha
}

// TestCachedBountyAnsweredBeforeItsWebhook: a bounty whose verdict is
// cached is answered while its webhook waits, its record finished with
// the answer before the 202 and never indexed open; a redelivery is
// acknowledged, counted, and not answered again.
func TestCachedBountyAnsweredBeforeItsWebhook(t *testing.T) {
	e, sha := cachedEngine(t, []byte("xx EICAR yy"))
	// The POST made while the webhook waits gets 10 s, not the engine's
	// 250 ms: a loaded machine could take longer than that to get it to
	// the market, and the answer was then (rightly) posted after the 202.
	e.svc.inlineBudget = 10 * time.Second
	body := e.market.bountyJSON(2, e.market.srv.URL+"/artifacts/gone", 30*time.Second, map[string]any{"sha256": sha})
	e.accept(t, body)
	select {
	case a := <-e.market.answers:
		if a.ID != "2" || str(a.Body["verdict"]) != "malicious" {
			t.Fatalf("answer %s: %s", a.ID, a.Raw)
		}
	default:
		t.Fatal("the webhook of a cached bounty was acknowledged before its answer was posted")
	}
	r, ok, err := e.svc.store.Get(bountyKey(2, PhaseAssertion))
	if err != nil || !ok || r.State != StateAnswered || r.Answer == nil || r.Answer.Verdict != shared.VerdictMalicious || r.PostAttempts != 1 {
		t.Fatalf("record after the 202: %+v %v %v", r, ok, err)
	}
	var open int
	e.svc.store.OpenKeysAfter(nil, func([]byte, time.Time) bool { open++; return true })
	if open != 0 {
		t.Errorf("%d open entries after an answer from the cache", open)
	}
	if code, reply := e.send(t, "bounty", body, map[string]string{HeaderDelivery: "again"}); code != http.StatusAccepted {
		t.Fatalf("redelivery: HTTP %d %s", code, reply)
	}
	r, _, _ = e.svc.store.Get(bountyKey(2, PhaseAssertion))
	if r.Redeliveries != 1 || r.State != StateAnswered {
		t.Errorf("record after the redelivery: %+v", r)
	}
	e.market.none(500 * time.Millisecond)
	if n := e.market.postCount("2"); n != 1 {
		t.Errorf("%d POSTs for the cached bounty, want 1", n)
	}
}

// TestCachedBountyRefusedAnswerRetriedInTheBackground: an answer from the
// cache that the marketplace does not take within the webhook's budget is
// acknowledged anyway, indexed open, and posted by the background
// delivery until it is taken: the same answer, once accepted.
func TestCachedBountyRefusedAnswerRetriedInTheBackground(t *testing.T) {
	e, sha := cachedEngine(t, []byte("xx EICAR yy"))
	// More refusals than the webhook's inline budget has room for
	// (backoff 100, 200, 400, 800 ms: at most 2 attempts in 250 ms).
	e.market.mu.Lock()
	e.market.failFirst = 6
	e.market.mu.Unlock()
	e.accept(t, e.market.bountyJSON(3, e.market.srv.URL+"/artifacts/gone", 30*time.Second, map[string]any{"sha256": sha}))
	if a := e.market.wait(20 * time.Second); a.ID != "3" || str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("answer %s: %s", a.ID, a.Raw)
	}
	r := e.record(t, 3, PhaseAssertion)
	if r.State != StateAnswered || r.Answer == nil || r.Answer.Verdict != shared.VerdictMalicious {
		t.Errorf("record: %+v", r)
	}
	if n := e.market.postCount("3"); n != 7 {
		t.Errorf("%d POSTs, want the 6 refused and the one accepted", n)
	}
	// The open entry goes just after the record is finished.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var open int
		e.svc.store.OpenKeysAfter(nil, func([]byte, time.Time) bool { open++; return true })
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d open entries once answered", open)
		}
	}
}

// TestCachedBountyAcknowledgedWhileItsAnswerStalls: the marketplace
// expects its 202 at once, so an answer endpoint that holds the cached
// answer's POST does not hold the webhook: it is acknowledged once the
// inline budget is spent, and that same POST is followed in the
// background until the endpoint takes it (posted again, it was a
// duplicate answer).
func TestCachedBountyAcknowledgedWhileItsAnswerStalls(t *testing.T) {
	e, sha := cachedEngine(t, []byte("xx EICAR yy"))
	hold := make(chan struct{})
	e.market.mu.Lock()
	e.market.holdAnswers = hold
	e.market.mu.Unlock()
	released := false
	defer func() {
		if !released {
			close(hold)
		}
	}()
	// The answer endpoint is held until after the 202: a webhook that
	// waited for its answer's POST would wait for the bounty's expiration
	// a minute away. 10 s is room for a loaded machine, not for that.
	body := e.market.bountyJSON(4, e.market.srv.URL+"/artifacts/gone", time.Minute, map[string]any{"sha256": sha})
	acked := make(chan int, 1)
	go func() {
		code, _ := e.send(t, "bounty", body, nil)
		acked <- code
	}()
	select {
	case code := <-acked:
		if code != http.StatusAccepted {
			t.Fatalf("bounty: HTTP %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook waits for its cached answer's POST to a stalled marketplace")
	}
	var open int
	e.svc.store.OpenKeysAfter(nil, func([]byte, time.Time) bool { open++; return true })
	if open != 1 {
		t.Errorf("%d open entries for the acknowledged bounty whose answer is not taken yet, want 1 (a crash must resume it)", open)
	}
	close(hold)
	released = true
	if a := e.market.wait(20 * time.Second); a.ID != "4" || str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("answer %s: %s", a.ID, a.Raw)
	}
	if r := e.record(t, 4, PhaseAssertion); r.State != StateAnswered {
		t.Errorf("record: %+v", r)
	}
	// The POST the webhook stopped waiting for was followed, not made
	// again: a slow marketplace had already taken it.
	if n := e.market.postCount("4"); n != 1 {
		t.Errorf("%d POSTs of the cached answer, want the one the webhook stopped waiting for", n)
	}
}
