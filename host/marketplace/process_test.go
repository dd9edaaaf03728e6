package marketplace

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/shared"
)

func TestAssertionAnswer(t *testing.T) {
	e := newTestEngine(t, eicarScanner())
	e.accept(t, e.market.bountyJSON(1, e.market.put("eicar", []byte("X5O...EICAR...")), time.Minute, nil))
	a := e.market.wait(5 * time.Second)
	if !strings.Contains(string(a.Raw), `"bid":1000000000000000000`) {
		t.Errorf("malicious at confidence 1 bids the max as a JSON integer: %s", a.Raw)
	}
	var got Answer
	if err := json.Unmarshal(a.Raw, &got); err != nil {
		t.Fatal(err)
	}
	// One backend judged: its own version strings. The host's version
	// "0.1.0-test" is cut to what ScanMetadata's pattern accepts.
	want := Metadata{MalwareFamily: "EICAR-Test-File", Product: "microengine", Confidence: 1, Scanner: ScannerInfo{
		Version: "0.1.0", VersionFull: "0.1.0-test", VendorVersion: "9.9", SignaturesVersion: "42",
		Environment: got.Metadata.Scanner.Environment,
	}, Backends: []Backend{{Name: "fake", Verdict: shared.VerdictMalicious, Version: "1.2.3", VendorVersion: "9.9", SignaturesVersion: "42", MalwareFamily: "EICAR-Test-File"}}}
	if got.Verdict != shared.VerdictMalicious || !reflect.DeepEqual(got.Metadata, want) || got.Metadata.Scanner.Environment.OperatingSystem == "" {
		t.Errorf("answer %+v, want malicious with %+v", got, want)
	}

	e.accept(t, e.market.bountyJSON(2, e.market.put("clean", []byte("hello")), time.Minute, nil))
	a = e.market.wait(5 * time.Second)
	// 1/16 NCT + (1 − 1/16) NCT × 0.5
	if !strings.Contains(string(a.Raw), `"verdict":"benign","bid":531250000000000000`) || !strings.Contains(string(a.Raw), `"malware_family":""`) {
		t.Errorf("benign answer: %s", a.Raw)
	}
	r := e.record(t, 2, PhaseAssertion)
	if r.State != StateAnswered || r.Answer == nil || len(r.Plugins) != 1 || r.Plugins[0].Version != "1.2.3" || r.PostAttempts != 1 {
		t.Errorf("audit record: %+v", r)
	}
}

func TestArbitrationVote(t *testing.T) {
	e := newTestEngine(t, eicarScanner())
	e.accept(t, e.market.bountyJSON(3, e.market.put("eicar", []byte("EICAR")), time.Minute, map[string]any{"phase": "arbitration"}))
	a := e.market.wait(5 * time.Second)
	if _, ok := a.Body["bid"]; ok || str(a.Body["verdict"]) != "malicious" || a.Body["metadata"] == nil {
		t.Errorf("vote: %s", a.Raw)
	}
}

// unknownAnswer checks the answer is unknown with bid 0 and returns the
// record's reason.
func unknownAnswer(t *testing.T, e *testEngine, id int64) string {
	t.Helper()
	a := e.market.wait(5 * time.Second)
	if !strings.Contains(string(a.Raw), `"verdict":"unknown","bid":0,`) {
		t.Errorf("bounty %d: want unknown, bid 0: %s", id, a.Raw)
	}
	r := e.record(t, id, PhaseAssertion)
	if r.State != StateAnswered || r.Reason == "" {
		t.Errorf("bounty %d: record %s %q", id, r.State, r.Reason)
	}
	return r.Reason
}

func TestFaultsAreUnknown(t *testing.T) {
	var scans atomic.Int32
	counting := ScanFunc(func(ctx context.Context, a engine.Artifact) engine.Result {
		scans.Add(1)
		return eicarScanner()(ctx, a)
	})
	// Every case fails fast on its own (unreachable: the connection is
	// refused); a 300 ms fetch timeout only made the cases whose download
	// must complete (sha256 mismatch, too big, the right sha256) fail
	// "deadline exceeded" when a loaded machine stalled them.
	e := newTestEngine(t, counting, func(c *config.Marketplace, _ *Options) {
		c.FetchTimeout = 10 * time.Second
		c.MaxArtifactSize = 16
		c.MaxRedirects = 2
		c.Filters = []config.Filter{{Action: "reject", Field: "mimetype", Op: "startswith", Value: "image/"}}
	})
	m := e.market
	clean := m.put("clean", []byte("hello"))
	sum := sha256.Sum256([]byte("hello"))
	for _, tc := range []struct {
		name   string
		uri    string
		extra  map[string]any
		reason string
	}{
		{"404", m.srv.URL + "/artifacts/none", nil, "404"},
		{"too big", m.put("big", []byte(strings.Repeat("x", 17))), nil, "over the 16-byte limit"},
		{"sha256 mismatch", clean, map[string]any{"sha256": strings.Repeat("ab", 32)}, "sha256 mismatch"},
		{"redirects", m.srv.URL + "/redirect/5", nil, "redirects"},
		{"filtered", clean, map[string]any{"mimetype": "image/png"}, "rejected by filter: mimetype startswith"},
		{"unsupported type", clean, map[string]any{"artifact_type": "FILE_ARCHIVE"}, "unsupported artifact type"},
		{"unreachable", "http://127.0.0.1:1/x", nil, "fetch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := int64(100 + len(tc.name))
			e.accept(t, m.bountyJSON(id, tc.uri, time.Minute, tc.extra))
			if reason := unknownAnswer(t, e, id); !strings.Contains(reason, tc.reason) {
				t.Errorf("reason %q, want %q", reason, tc.reason)
			}
		})
	}
	if n := scans.Load(); n != 0 {
		t.Errorf("%d scans ran; every case should fail before the scan", n)
	}

	// The right sha256 passes, in any case.
	e.accept(t, m.bountyJSON(200, clean, time.Minute, map[string]any{"sha256": strings.ToUpper(hex.EncodeToString(sum[:]))}))
	if a := m.wait(5 * time.Second); str(a.Body["verdict"]) != "benign" {
		t.Errorf("matching sha256: %s", a.Raw)
	}
}

func TestFetchTimeout(t *testing.T) {
	e := newTestEngine(t, eicarScanner(), func(c *config.Marketplace, _ *Options) { c.FetchTimeout = 200 * time.Millisecond })
	// The download would take a minute (the bounty's whole life): an
	// answer within unknownAnswer's 5 s is the fetch timeout's doing. (A
	// 2 s download and a 1.5 s bound on the whole round left a loaded
	// machine 1.3 s.)
	e.market.slowFetch = time.Minute
	e.accept(t, e.market.bountyJSON(5, e.market.put("slow", []byte("x")), time.Minute, nil))
	if reason := unknownAnswer(t, e, 5); !strings.Contains(reason, "deadline exceeded") {
		t.Errorf("reason %q", reason)
	}
}

func TestScanBoundedByExpiration(t *testing.T) {
	// A scanner that never finishes on its own: the answer must still
	// arrive before the expiration, unknown.
	hang := ScanFunc(func(ctx context.Context, a engine.Artifact) engine.Result {
		<-ctx.Done()
		return engine.Result{Verdict: shared.VerdictBenign, Confidence: 1} // a lying scanner
	})
	// The scan is cut 1 s in, at expiration − safety margin; the margin,
	// 2 s, is the time left to post (200 ms of 700 were not always enough
	// on a loaded machine: no answer arrived). The deadline watch may
	// take a bounty no worker took only from 0.5 s in.
	e := newTestEngine(t, hang, func(c *config.Marketplace, _ *Options) { c.SafetyMargin = 2 * time.Second })
	e.accept(t, e.market.bountyJSON(6, e.market.put("x", []byte("x")), 3*time.Second, nil))
	a := e.market.wait(10 * time.Second)
	r := e.record(t, 6, PhaseAssertion)
	if !a.At.Before(r.Bounty.Expiration) {
		t.Errorf("answered at %s, after the expiration %s", a.At, r.Bounty.Expiration)
	}
	if !strings.Contains(string(a.Raw), `"verdict":"unknown","bid":0`) {
		t.Errorf("a benign after the deadline must become unknown: %s", a.Raw)
	}
}

// TestURLBounty: a url bounty's artifact_uri is a download link like a
// file's; the content behind it (text/uri-list) is the URL that is judged.
func TestURLBounty(t *testing.T) {
	var seen atomic.Value
	scanner := ScanFunc(func(ctx context.Context, a engine.Artifact) engine.Result {
		data, _ := io.ReadAll(io.NewSectionReader(a.Content, 0, a.Size))
		seen.Store(string(data))
		if a.Type != shared.ArtifactURL {
			t.Errorf("type %s", a.Type)
		}
		return eicarScanner()(ctx, a)
	})
	e := newTestEngine(t, scanner)
	const judged = "http://EICAR.example/judged\r\n"
	uri := e.market.put("link", []byte(judged))
	e.accept(t, e.market.bountyJSON(8, uri, time.Minute, map[string]any{"artifact_type": "URL"}))
	if a := e.market.wait(5 * time.Second); str(a.Body["verdict"]) != "malicious" {
		t.Errorf("url bounty: %s", a.Raw)
	}
	if got := seen.Load(); got != judged {
		t.Errorf("scanned %q, want the content behind the link %q", got, judged)
	}
}

// TestDataURIBounty: polyswarm_engine sends the content in a data: URI,
// base64 or percent-encoded.
func TestDataURIBounty(t *testing.T) {
	e := newTestEngine(t, eicarScanner())
	for id, uri := range map[int64]string{
		20: "data:application/octet-stream;base64," + base64.StdEncoding.EncodeToString([]byte("X5O!P%@AP EICAR")),
		21: "data:,X5O%21P%25%40AP%20EICAR",
		22: "data:text/plain,harmless",
	} {
		e.accept(t, e.market.bountyJSON(id, uri, time.Minute, nil))
	}
	got := map[string]string{}
	for range 3 {
		a := e.market.wait(5 * time.Second)
		got[a.ID] = str(a.Body["verdict"])
	}
	if got["20"] != "malicious" || got["21"] != "malicious" || got["22"] != "benign" {
		t.Errorf("verdicts %v", got)
	}
	// Over the artifact size limit: unknown, with the reason.
	e2 := newTestEngine(t, eicarScanner(), func(c *config.Marketplace, _ *Options) { c.MaxArtifactSize = 4 })
	e2.accept(t, e2.market.bountyJSON(23, "data:,EICAR-and-more", time.Minute, nil))
	if a := e2.market.wait(5 * time.Second); str(a.Body["verdict"]) != "unknown" {
		t.Errorf("oversized data: URI: %s", a.Raw)
	}
	if r := e2.record(t, 23, PhaseAssertion); !strings.Contains(r.Reason, "over the 4-byte limit") {
		t.Errorf("reason %q", r.Reason)
	}
}

func TestResponseRetried(t *testing.T) {
	e := newTestEngine(t, eicarScanner())
	e.market.failFirst = 2
	e.accept(t, e.market.bountyJSON(9, e.market.put("c", []byte("c")), time.Minute, nil))
	e.market.wait(5 * time.Second)
	r := e.record(t, 9, PhaseAssertion)
	if r.State != StateAnswered || r.PostAttempts != 3 || e.market.postCount("9") != 3 {
		t.Errorf("state %s attempts %d posts %d", r.State, r.PostAttempts, e.market.postCount("9"))
	}
}

func TestResponseNeverAccepted(t *testing.T) {
	e := newTestEngine(t, eicarScanner())
	e.market.failFirst = 1 << 30
	// Posted until the expiration, when the record is finished: 2 s for
	// the scan and at least two posts (800 ms left a loaded machine one).
	e.accept(t, e.market.bountyJSON(10, e.market.put("c", []byte("c")), 2*time.Second, nil))
	r := e.record(t, 10, PhaseAssertion)
	if r.State != StateFailed || r.PostAttempts < 2 || !strings.Contains(r.Reason, "503") {
		t.Errorf("record %s attempts %d reason %q", r.State, r.PostAttempts, r.Reason)
	}
	waitCounter(t, e.reg, "microengine_bounties_failed_total", nil, 1)
}

func TestExpiredAndTooLate(t *testing.T) {
	var scans atomic.Int32
	e := newTestEngine(t, ScanFunc(func(ctx context.Context, a engine.Artifact) engine.Result {
		scans.Add(1)
		return eicarScanner()(ctx, a)
	}), func(c *config.Marketplace, _ *Options) { c.SafetyMargin = 5 * time.Second })
	uri := e.market.put("c", []byte("c"))

	e.accept(t, e.market.bountyJSON(11, uri, -time.Second, nil))
	if r := e.record(t, 11, PhaseAssertion); r.State != StateExpired {
		t.Errorf("expired bounty: %s", r.State)
	}
	// Inside the safety margin: no scan, but an answer, at once. It has
	// until the expiration to be posted: 3 s (1 s was a window a loaded
	// machine could miss).
	e.accept(t, e.market.bountyJSON(12, uri, 3*time.Second, nil))
	unknownAnswer(t, e, 12)
	e.market.none(100 * time.Millisecond)
	if scans.Load() != 0 {
		t.Errorf("%d scans", scans.Load())
	}
	waitCounter(t, e.reg, "microengine_bounties_expired_total", nil, 1)
}

func TestRedeliveryProcessedOnce(t *testing.T) {
	var scans atomic.Int32
	e := newTestEngine(t, ScanFunc(func(ctx context.Context, a engine.Artifact) engine.Result {
		scans.Add(1)
		return eicarScanner()(ctx, a)
	}))
	body := e.market.bountyJSON(13, e.market.put("c", []byte("c")), time.Minute, nil)
	for i, d := range []string{"d-1", "d-1", "d-2", ""} {
		if code, reply := e.send(t, "bounty", body, map[string]string{HeaderDelivery: d}); code != 202 {
			t.Fatalf("delivery %d: %d %s", i, code, reply)
		}
	}
	e.market.wait(5 * time.Second)
	e.market.none(200 * time.Millisecond)
	// A later redelivery of an answered bounty is acknowledged, not redone.
	e.send(t, "bounty", body, map[string]string{HeaderDelivery: "d-3"})
	e.market.none(200 * time.Millisecond)
	r := e.record(t, 13, PhaseAssertion)
	if scans.Load() != 1 || r.Redeliveries != 4 || strings.Join(r.Deliveries, ",") != "d-1,d-2,d-3" {
		t.Errorf("scans %d redeliveries %d deliveries %v", scans.Load(), r.Redeliveries, r.Deliveries)
	}
	// The same id in the other phase is a different question.
	e.accept(t, e.market.bountyJSON(13, e.market.put("c", []byte("c")), time.Minute, map[string]any{"phase": "arbitration"}))
	e.market.wait(5 * time.Second)
}

func TestQueueFullAnswersUnknownEarly(t *testing.T) {
	release := make(chan struct{})
	scanning := make(chan struct{}, 4)
	slow := ScanFunc(func(ctx context.Context, a engine.Artifact) engine.Result {
		scanning <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return eicarScanner()(ctx, a)
	})
	e := newTestEngine(t, slow, func(c *config.Marketplace, _ *Options) { c.Workers, c.QueueSize = 1, 1 })
	uri := e.market.put("c", []byte("c"))
	// One scanning: the only worker has taken it before the next arrives.
	e.accept(t, e.market.bountyJSON(20, uri, time.Minute, nil))
	select {
	case <-scanning:
	case <-time.After(5 * time.Second):
		t.Fatal("the worker never took the first bounty")
	}
	for id := int64(21); id < 24; id++ { // one queued, two early
		e.accept(t, e.market.bountyJSON(id, uri, time.Minute, nil))
	}
	for range 2 {
		// At once, unless the early lane too was full for a moment (its
		// posters not yet scheduled): then from the store, at the
		// janitor's next sweep, a second later.
		a := e.market.wait(10 * time.Second)
		if !strings.Contains(string(a.Raw), `"verdict":"unknown","bid":0`) {
			t.Errorf("overflow answer %s: %s", a.ID, a.Raw)
		}
	}
	close(release)
	for range 2 {
		if a := e.market.wait(5 * time.Second); str(a.Body["verdict"]) != "benign" {
			t.Errorf("scanned answer %s: %s", a.ID, a.Raw)
		}
	}
}

func TestResumeAfterRestart(t *testing.T) {
	dir := t.TempDir()
	market := newFakeMarket(t)
	uri := market.put("e", []byte("EICAR"))

	// A "crash" between storing and scanning: the bounty is only in the store.
	store := openEmbedded(t, dir, config.DefaultRetention)
	for id, exp := range map[int64]time.Duration{30: time.Minute, 31: -time.Second} {
		b, err := ParseBounty(market.bountyJSON(id, uri, exp, nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Put(context.Background(), b, "", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	store.Close()

	e := startTestEngine(t, dir, market, eicarScanner())
	if a := market.wait(5 * time.Second); a.ID != "30" || str(a.Body["verdict"]) != "malicious" {
		t.Errorf("resumed answer %s: %s", a.ID, a.Raw)
	}
	if r := e.record(t, 31, PhaseAssertion); r.State != StateExpired {
		t.Errorf("expired while down: %s", r.State)
	}
	market.none(100 * time.Millisecond)
}

func TestShutdownLeavesUnfinishedOpen(t *testing.T) {
	started := make(chan struct{}, 1)
	cancelled := make(chan time.Time, 1)
	hang := ScanFunc(func(ctx context.Context, a engine.Artifact) engine.Result {
		started <- struct{}{}
		<-ctx.Done()
		cancelled <- time.Now()
		return engine.Result{Verdict: shared.VerdictUnknown, Reason: "cancelled"}
	})
	dir := t.TempDir()
	market := newFakeMarket(t)
	e := startTestEngine(t, dir, market, hang, func(_ *config.Marketplace, o *Options) { o.ShutdownGrace = 200 * time.Millisecond })
	e.accept(t, market.bountyJSON(40, market.put("c", []byte("c")), time.Minute, nil))
	<-started
	start := time.Now()
	e.stop()
	// The scan was given up at the 200 ms grace (unset, it is 10 s). What
	// stop does after, closing the store, is not timed: on a loaded
	// machine its flush may take long (stop was bounded at 2 s whole).
	if d := (<-cancelled).Sub(start); d > 5*time.Second {
		t.Errorf("the scan in flight was cancelled %s into the stop, want at the 200 ms grace", d)
	}
	market.none(50 * time.Millisecond)

	// Next start resumes it.
	e2 := startTestEngine(t, dir, market, eicarScanner())
	if a := market.wait(5 * time.Second); a.ID != "40" {
		t.Errorf("resumed %s", a.ID)
	}
	e2.record(t, 40, PhaseAssertion)
}
