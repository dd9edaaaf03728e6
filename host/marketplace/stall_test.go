package marketplace

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/shared"
)

// TestSlowPeersDoNotStarveOthers: answers that are refused (500) are
// retried apart from the scanning workers, so the bounties behind them
// are still scanned and answered.
func TestSlowPeersDoNotStarveOthers(t *testing.T) {
	e := newTestEngine(t, eicarScanner(), func(c *config.Marketplace, _ *Options) { c.Workers = 1 })
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	defer refusing.Close()
	uri := e.market.put("e", []byte("EICAR"))
	for id := int64(300); id < 304; id++ {
		e.accept(t, e.market.bountyJSON(id, uri, 20*time.Second, map[string]any{"response_url": refusing.URL + "/r"}))
	}
	for id := int64(310); id < 316; id++ {
		e.accept(t, e.market.bountyJSON(id, uri, 3*time.Second, nil))
	}
	for range 6 {
		if a := e.market.wait(3 * time.Second); str(a.Body["verdict"]) != "malicious" {
			t.Errorf("answer %s: %s", a.ID, a.Raw)
		}
	}
}

// TestStuckWorkersStillAnswerUnknown: when every worker is held by a
// download that never sends headers, the bounties queued behind are still
// answered (unknown) before they expire.
func TestStuckWorkersStillAnswerUnknown(t *testing.T) {
	hang := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer hanging.Close()
	defer close(hang)
	// The deadline watch takes a queued bounty once expiration − safety
	// margin is within two ticks (500 ms): with a 2 s margin and 3 s
	// bounties, from 0.5 s in, leaving 2.5 s to answer ten (a 200 ms
	// margin on 2 s bounties left 0.5 s: a loaded machine could miss it).
	e := newTestEngine(t, eicarScanner(), func(c *config.Marketplace, _ *Options) {
		c.Workers, c.FetchTimeout, c.SafetyMargin = 2, 10*time.Second, 2*time.Second
	})
	for id := int64(400); id < 404; id++ {
		e.accept(t, e.market.bountyJSON(id, hanging.URL+"/a", time.Minute, nil))
	}
	uri := e.market.put("e", []byte("EICAR"))
	sent := time.Now()
	const n = 10
	const life = 3 * time.Second
	for id := int64(410); id < 410+n; id++ {
		e.accept(t, e.market.bountyJSON(id, uri, life, nil))
	}
	for range n {
		a := e.market.wait(10 * time.Second)
		if a.At.Sub(sent) > life {
			t.Errorf("bounty %s answered after its expiration: %s", a.ID, a.At.Sub(sent))
		}
		if id, _ := strconv.Atoi(a.ID); id < 410 || str(a.Body["verdict"]) != "unknown" {
			t.Errorf("answer %s: %s", a.ID, a.Raw)
		}
	}
}

// TestAnswersNeverFollowRedirects: a 302 would turn the answer into a GET
// and a 307 would re-post it elsewhere; neither is followed, and the
// answer counts as not taken.
func TestAnswersNeverFollowRedirects(t *testing.T) {
	var elsewhere atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
	}))
	defer target.Close()
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		http.Redirect(w, r, target.URL+"/taken", code)
	}))
	defer redirecting.Close()
	e := newTestEngine(t, eicarScanner(), func(c *config.Marketplace, _ *Options) { c.MaxRedirects = 5 })
	uri := e.market.put("e", []byte("EICAR"))
	// The answers are retried until the expiration, which is when the
	// records are finished: both bounties at once, each given 2 s for its
	// scan and at least two posts (800 ms each, one after the other, left
	// a loaded machine time for one post, or none).
	codes := []int{302, 307}
	for i, code := range codes {
		e.accept(t, e.market.bountyJSON(int64(500+i), uri, 2*time.Second, map[string]any{"response_url": redirecting.URL + "/" + strconv.Itoa(code)}))
	}
	for i, code := range codes {
		r := e.record(t, int64(500+i), PhaseAssertion)
		if r.State != StateFailed || r.PostAttempts < 2 || !strings.Contains(r.Reason, "do not follow redirects") {
			t.Errorf("%d: record %s, %d attempts, %q", code, r.State, r.PostAttempts, r.Reason)
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}

// TestDownloadRedirectsStayOutside: a download may be redirected (within
// max_redirects) but never from a public address to an internal one.
func TestDownloadRedirectsStayOutside(t *testing.T) {
	internalHits := atomic.Int32{}
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		internalHits.Add(1)
		w.Write([]byte("# HELP secret internal metrics"))
	}))
	defer internal.Close()
	// "artifacts.example" is a public host (203.0.113.7) that redirects
	// to the engine's own loopback; the client dials it on loopback.
	public := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/metrics", http.StatusFound)
	}))
	defer public.Close()
	dialer := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if strings.HasPrefix(addr, "artifacts.example:") {
			addr = public.Listener.Addr().String()
		}
		return dialer.DialContext(ctx, network, addr)
	}}}
	e := newTestEngine(t, eicarScanner(), func(c *config.Marketplace, o *Options) { o.HTTPClient, c.MaxRedirects = client, 5 })
	e.svc.fetcher.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		if host == "artifacts.example" {
			return []netip.Addr{netip.MustParseAddr("203.0.113.7")}, nil
		}
		return net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
	}
	e.accept(t, e.market.bountyJSON(600, "http://artifacts.example/a", time.Minute, nil))
	reason := unknownAnswer(t, e, 600)
	if !strings.Contains(reason, "refused a redirect from the public artifacts.example") {
		t.Errorf("reason %q", reason)
	}
	if n := internalHits.Load(); n != 0 {
		t.Errorf("the internal address was fetched %d times", n)
	}
	// Internal to internal (a test marketplace on loopback) still works.
	e.accept(t, e.market.bountyJSON(601, e.market.srv.URL+"/redirect/2", time.Minute, nil))
	if a := e.market.wait(5 * time.Second); str(a.Body["verdict"]) != "benign" {
		t.Errorf("loopback redirect: %s", a.Raw)
	}
}

// TestAnswerCommittedBeforePostAndReposted: the answer is in the store
// before its first POST; after a stop while it is still being retried,
// the next start posts that same answer, even though a new scan would
// now say something else.
func TestAnswerCommittedBeforePostAndReposted(t *testing.T) {
	dir := t.TempDir()
	market := newFakeMarket(t)
	var mu sync.Mutex
	var committedAtFirstPost *Answer
	var svc *Service
	refuse := true
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if committedAtFirstPost == nil {
			rec, _, _ := svc.store.Get(bountyKey(700, PhaseAssertion))
			committedAtFirstPost = rec.Answer
			if committedAtFirstPost == nil {
				committedAtFirstPost = &Answer{Verdict: "none committed"}
			}
		}
		if refuse {
			http.Error(w, "later", http.StatusServiceUnavailable)
			return
		}
		var a map[string]json.RawMessage
		json.Unmarshal(body, &a)
		market.answers <- postedAnswer{ID: "700", Body: a, Raw: body, At: time.Now()}
	}))
	defer flaky.Close()
	body := market.bountyJSON(700, market.put("e", []byte("EICAR")), time.Minute, map[string]any{"response_url": flaky.URL + "/r"})

	e := startTestEngine(t, dir, market, eicarScanner(), func(_ *config.Marketplace, o *Options) { o.ShutdownGrace = 300 * time.Millisecond })
	mu.Lock()
	svc = e.svc
	mu.Unlock()
	e.accept(t, body)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return committedAtFirstPost != nil })
	e.stop()
	if committedAtFirstPost.Verdict != shared.VerdictMalicious {
		t.Fatalf("committed at the first POST: %+v", committedAtFirstPost)
	}

	// The next start has a scanner that would say unknown: the committed
	// malicious answer is what is posted.
	var scans atomic.Int32
	unknownNow := ScanFunc(func(ctx context.Context, a engine.Artifact) engine.Result {
		scans.Add(1)
		return engine.Result{Verdict: shared.VerdictUnknown, Reason: "backend down"}
	})
	mu.Lock()
	refuse = false
	mu.Unlock()
	e2 := startTestEngine(t, dir, market, unknownNow)
	mu.Lock()
	svc = e2.svc
	mu.Unlock()
	if a := market.wait(5 * time.Second); str(a.Body["verdict"]) != "malicious" {
		t.Errorf("reposted answer: %s", a.Raw)
	}
	if r := e2.record(t, 700, PhaseAssertion); r.State != StateAnswered || r.Answer.Verdict != shared.VerdictMalicious {
		t.Errorf("record %s %+v", r.State, r.Answer)
	}
	if scans.Load() != 0 {
		t.Errorf("scanned again %d times", scans.Load())
	}
}

// TestGuardedDialRefusesInternalAfterPublic: once a download passed a
// public address, the address actually dialed is checked too, so a name
// that resolves to a public address for the redirect check and to a
// loopback one for the connection (DNS rebinding) is refused.
func TestGuardedDialRefusesInternalAfterPublic(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	f := &fetcher{lookup: func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}}
	ctx := context.Background()
	// Not armed (no public hop yet): loopback is fine.
	c, err := f.guardedDial(context.WithValue(ctx, redirectGuardKey{}, &redirectGuard{}), "tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("unarmed dial: %v", err)
	}
	c.Close()
	armed := &redirectGuard{}
	armed.publicOnly.Store(true)
	if c, err := f.guardedDial(context.WithValue(ctx, redirectGuardKey{}, armed), "tcp", "rebind.example:"+port); err == nil {
		c.Close()
		t.Fatal("an armed download connected to a loopback address")
	} else if !strings.Contains(err.Error(), "refused to connect to the internal rebind.example") {
		t.Errorf("error %v", err)
	}
}
