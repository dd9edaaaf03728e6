package marketplace

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/marketplace/bountiesdb"
	"github.com/microengine/microengine/host/marketplace/bountiesdb/bountiesdbtest"
	"github.com/microengine/microengine/host/queue"
	"github.com/microengine/microengine/host/verdictcache"
	"github.com/microengine/microengine/shared"
)

// holdAnsweredWrites runs fn before each write of a record with its
// answer (writeAnswered): it may hold the write up, or fail it.
func holdAnsweredWrites(st *JetStore, fn func(context.Context) error) {
	if fn == nil {
		st.answeredWriteHook.Store(nil)
		return
	}
	st.answeredWriteHook.Store(&fn)
}

// heldAnsweredWrites holds st's answered writes until release is called
// (or the test ends): entered receives as each begins.
func heldAnsweredWrites(t *testing.T, st *JetStore) (entered <-chan struct{}, release func()) {
	in, done := make(chan struct{}, 1), make(chan struct{})
	holdAnsweredWrites(st, func(ctx context.Context) error {
		in <- struct{}{}
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	var once sync.Once
	release = func() { once.Do(func() { close(done) }) }
	t.Cleanup(release)
	return in, release
}

// sendAsync posts a signed bounty webhook on its own goroutine; its
// status (or 0 when the request failed) arrives on the channel.
func (e *testEngine) sendAsync(body []byte) <-chan int {
	code := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/", bytes.NewReader(body))
		req.Header.Set(HeaderEvent, "bounty")
		req.Header.Set(HeaderSignature, Sign(testSecret, body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			code <- 0
			return
		}
		resp.Body.Close()
		code <- resp.StatusCode
	}()
	return code
}

func waitCode(t *testing.T, acked <-chan int, within time.Duration) int {
	t.Helper()
	select {
	case code := <-acked:
		return code
	case <-time.After(within):
		t.Fatalf("webhook not answered within %s", within)
		return 0
	}
}

func openEntries(st *JetStore) (n int) {
	st.OpenKeysAfter(nil, func([]byte, time.Time) bool { n++; return true })
	return n
}

// TestCachedAnswerPostedWhileItsWriteIsHeld: on the embedded node a new
// bounty answered from the verdict cache has its answer posted while its
// record's write is still under way (held here), and its webhook is
// acknowledged only once that write is done; the record then holds the
// answered outcome, and a redelivery is acknowledged without a POST.
func TestCachedAnswerPostedWhileItsWriteIsHeld(t *testing.T) {
	e, sha := cachedEngine(t, []byte("xx EICAR yy"))
	// Room for a loaded machine: the answer taken later than this is
	// followed in the background (another test's case).
	e.svc.inlineBudget = 10 * time.Second
	entered, release := heldAnsweredWrites(t, e.svc.store)
	body := e.market.bountyJSON(2, e.market.srv.URL+"/artifacts/gone", 30*time.Second, map[string]any{"sha256": sha})
	acked := e.sendAsync(body)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the record's write never started")
	}
	if a := e.market.wait(10 * time.Second); a.ID != "2" || str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("answer %s: %s", a.ID, a.Raw)
	}
	select {
	case code := <-acked:
		t.Fatalf("webhook answered %d while its record's write was held", code)
	default:
	}
	release()
	if code := waitCode(t, acked, 10*time.Second); code != http.StatusAccepted {
		t.Fatalf("bounty: HTTP %d", code)
	}
	holdAnsweredWrites(e.svc.store, nil)
	r, ok, err := e.svc.store.Get(bountyKey(2, PhaseAssertion))
	if err != nil || !ok || r.State != StateAnswered || r.Answer == nil || r.Answer.Verdict != shared.VerdictMalicious || r.PostAttempts != 1 {
		t.Fatalf("record after the 202: %+v %v %v", r, ok, err)
	}
	if n := openEntries(e.svc.store); n != 0 {
		t.Errorf("%d open entries after an answer from the cache", n)
	}
	if code, reply := e.send(t, "bounty", body, map[string]string{HeaderDelivery: "again"}); code != http.StatusAccepted {
		t.Fatalf("redelivery: HTTP %d %s", code, reply)
	}
	e.market.none(500 * time.Millisecond)
	if n := e.market.postCount("2"); n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
	if r, _, _ := e.svc.store.Get(bountyKey(2, PhaseAssertion)); r.Redeliveries != 1 || r.State != StateAnswered {
		t.Errorf("record after the redelivery: %+v", r)
	}
}

// TestCachedAnswerTakenThoughItsWriteFailed: a record that cannot be
// stored beside an answer the marketplace took leaves the bounty
// answered: acknowledged, counted, and never answered a second time by
// the ordinary path.
func TestCachedAnswerTakenThoughItsWriteFailed(t *testing.T) {
	e, sha := cachedEngine(t, []byte("xx EICAR yy"))
	e.svc.inlineBudget = 10 * time.Second
	holdAnsweredWrites(e.svc.store, func(context.Context) error { return errors.New("disk full (test)") })
	e.accept(t, e.market.bountyJSON(3, e.market.srv.URL+"/artifacts/gone", 30*time.Second, map[string]any{"sha256": sha}))
	if a := e.market.wait(10 * time.Second); a.ID != "3" || str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("answer %s: %s", a.ID, a.Raw)
	}
	if n := counter(t, e.reg, "microengine_bounties_answered_unstored_total", nil); n != 1 {
		t.Errorf("unstored answers counted: %v, want 1", n)
	}
	e.market.none(500 * time.Millisecond)
	if n := e.market.postCount("3"); n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
	if r, ok, err := e.svc.store.Get(bountyKey(3, PhaseAssertion)); ok || err != nil {
		t.Errorf("a record whose write failed: %+v %v %v", r, ok, err)
	}
	if n := openEntries(e.svc.store); n != 0 {
		t.Errorf("%d open entries", n)
	}
}

// TestCachedAnswerRefusedWhileItsWriteFailedGoesTheOrdinaryWay: with its
// write failed and its answer refused for good, nothing was answered: the
// bounty is stored the ordinary way and answered by a worker.
func TestCachedAnswerRefusedWhileItsWriteFailedGoesTheOrdinaryWay(t *testing.T) {
	e, sha := cachedEngine(t, []byte("xx EICAR yy"))
	e.svc.inlineBudget = 10 * time.Second
	e.market.mu.Lock()
	e.market.refuseFirst = 1
	e.market.mu.Unlock()
	holdAnsweredWrites(e.svc.store, func(context.Context) error { return errors.New("disk full (test)") })
	e.accept(t, e.market.bountyJSON(4, e.market.srv.URL+"/artifacts/gone", 30*time.Second, map[string]any{"sha256": sha}))
	if a := e.market.wait(10 * time.Second); a.ID != "4" || str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("answer %s: %s", a.ID, a.Raw)
	}
	if r := e.record(t, 4, PhaseAssertion); r.State != StateAnswered {
		t.Errorf("record: %+v", r)
	}
	if n := e.market.postCount("4"); n != 2 {
		t.Errorf("%d POSTs, want the refused one and the worker's", n)
	}
	if n := counter(t, e.reg, "microengine_bounties_answered_unstored_total", nil); n != 0 {
		t.Errorf("unstored answers counted: %v, want 0", n)
	}
}

// TestCachedAnswerUndecidedWhileItsWriteFailedIsWaitedFor: with its write
// failed and its answer's POST held by the marketplace past the inline
// budget, the webhook waits for that POST (acknowledged now, a failed
// POST would lose the bounty; stored the ordinary way now, it could be
// answered twice), then is acknowledged: one answer.
func TestCachedAnswerUndecidedWhileItsWriteFailedIsWaitedFor(t *testing.T) {
	e, sha := cachedEngine(t, []byte("xx EICAR yy"))
	e.svc.inlineBudget = time.Millisecond
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
	failed := make(chan struct{}, 1)
	holdAnsweredWrites(e.svc.store, func(context.Context) error {
		select {
		case failed <- struct{}{}:
		default: // the writes again in the background
		}
		return errors.New("disk full (test)")
	})
	acked := e.sendAsync(e.market.bountyJSON(5, e.market.srv.URL+"/artifacts/gone", time.Minute, map[string]any{"sha256": sha}))
	select {
	case <-failed:
	case <-time.After(10 * time.Second):
		t.Fatal("the record's write never started")
	}
	for deadline := time.Now().Add(10 * time.Second); e.market.postCount("5") == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the answer's POST never reached the marketplace")
		}
	}
	// Its write failed, its POST is held past the budget: a webhook
	// answered now is answered wrong.
	select {
	case code := <-acked:
		t.Fatalf("webhook answered %d while nothing durable held the bounty and its answer was undecided", code)
	case <-time.After(300 * time.Millisecond):
	}
	close(hold)
	released = true
	if code := waitCode(t, acked, 10*time.Second); code != http.StatusAccepted {
		t.Fatalf("bounty: HTTP %d", code)
	}
	if a := e.market.wait(10 * time.Second); a.ID != "5" || str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("answer %s: %s", a.ID, a.Raw)
	}
	e.market.none(500 * time.Millisecond)
	if n := e.market.postCount("5"); n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
	if n := counter(t, e.reg, "microengine_bounties_answered_unstored_total", nil); n != 1 {
		t.Errorf("unstored answers counted: %v, want 1", n)
	}
}

// TestCachedAnswerInAClusterIsStoredFirst: where other engines may hold
// a bounty's record, the cached answer is committed (its record written)
// before its first POST, as every other answer.
func TestCachedAnswerInAClusterIsStoredFirst(t *testing.T) {
	url := natsServer(t)
	e, sha := cachedEngine(t, []byte("xx EICAR yy"), func(_ *config.Marketplace, o *Options) {
		q := config.DefaultQueue()
		q.Servers = []string{url}
		o.Queue = &q
	})
	e.svc.inlineBudget = 10 * time.Second
	entered, release := heldAnsweredWrites(t, e.svc.store)
	acked := e.sendAsync(e.market.bountyJSON(6, e.market.srv.URL+"/artifacts/gone", 30*time.Second, map[string]any{"sha256": sha}))
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the record's write never started")
	}
	e.market.none(300 * time.Millisecond) // the embedded node's answer comes in milliseconds
	release()
	if code := waitCode(t, acked, 10*time.Second); code != http.StatusAccepted {
		t.Fatalf("bounty: HTTP %d", code)
	}
	if a := e.market.wait(10 * time.Second); a.ID != "6" || str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("answer %s: %s", a.ID, a.Raw)
	}
	if r := e.record(t, 6, PhaseAssertion); r.State != StateAnswered || r.PostAttempts != 1 {
		t.Errorf("record: %+v", r)
	}
}

// TestNoRecordHere: only the embedded node tells a bounty without a
// record without a read: one it stored, finished, or stored before a
// restart has one, and after a restart so may any bounty expiring before
// the horizon of what the earlier run stored (a store without a horizon
// file, from an older version: any bounty of the next 24 h).
func TestNoRecordHere(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openEmbedded(t, dir, config.DefaultRetention)
	exp := time.Now().Add(time.Hour)
	b := testBounty(7, exp)
	if !s.noRecordHere(b.Key(), exp) {
		t.Fatal("a new bounty has a record on a new embedded node")
	}
	if created, err := s.putAnswered(ctx, b, "d-1", time.Now(), &Answer{Verdict: shared.VerdictBenign}, "", nil); err != nil || !created {
		t.Fatalf("putAnswered: %v %v", created, err)
	}
	if s.noRecordHere(b.Key(), exp) {
		t.Error("no record of a bounty just stored")
	}
	if done, err := s.Finish(ctx, b.Key(), Outcome{State: StateAnswered, At: time.Now()}); err != nil || !done {
		t.Fatalf("finish: %v %v", done, err)
	}
	if s.noRecordHere(b.Key(), exp) {
		t.Error("no record of a bounty finished")
	}
	put := testBounty(8, exp)
	if _, err := s.Put(ctx, put, "d-2", time.Now()); err != nil {
		t.Fatal(err)
	}
	if s.noRecordHere(put.Key(), exp) {
		t.Error("no record of a bounty stored the ordinary way")
	}
	s.Close()

	s = openEmbedded(t, dir, config.DefaultRetention)
	if s.noRecordHere(b.Key(), exp) {
		t.Error("no record of a bounty stored before the restart")
	}
	if s.noRecordHere(testBounty(9, exp).Key(), exp) {
		t.Error("a bounty expiring within the earlier run's horizon is known to have no record")
	}
	later := exp.Add(horizonStep + time.Minute)
	if !s.noRecordHere(testBounty(9, later).Key(), later) {
		t.Error("a bounty expiring past the earlier run's horizon is not known new")
	}
	s.Close()

	// A store of a version before the horizon's file.
	if err := os.Remove(filepath.Join(dir, queue.StoreDir, horizonFile)); err != nil {
		t.Fatal(err)
	}
	s = openEmbedded(t, dir, config.DefaultRetention)
	defer s.Close()
	day := time.Now().Add(maxBountyLifetime - time.Minute)
	if s.noRecordHere(testBounty(10, day).Key(), day) {
		t.Error("a store with records and no horizon claims to know a bounty of the next 24 h has none")
	}
	if c := joinServer(t, natsServer(t)); c.noRecordHere(testBounty(11, exp).Key(), exp) {
		t.Error("a cluster's engine claims to know a bounty has no record without asking")
	}
}

// TestCachedRedeliveryFoundInBountiesDB: during an upgrade, a bounty the
// older version answered, in its bounties.db but lost from its indexes
// (so not moved at start), is not new: its redelivery, whose verdict the
// cache holds, is acknowledged without an answer.
func TestCachedRedeliveryFoundInBountiesDB(t *testing.T) {
	dir := t.TempDir()
	market := newFakeMarket(t)
	content := []byte("xx EICAR yy")
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	extra := map[string]any{"sha256": sha}
	body := market.bountyJSON(50, market.srv.URL+"/artifacts/gone", time.Minute, extra)
	answered, err := ParseBounty(body)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	old := oldRecord(t, Record{Bounty: answered, State: StateAnswered, ReceivedAt: now, FinishedAt: now, Answer: &Answer{Verdict: shared.VerdictBenign}})
	old.Open, old.Finished = false, time.Time{} // in no index
	bountiesdbtest.Write(t, filepath.Join(dir, bountiesdb.File), old)
	cache := verdictcache.New(verdictcache.Config{TTL: time.Hour, MaxEntries: 100}, "", nil)
	var scans atomic.Int32
	eng := engine.New(onePlugin{eicarPlugin{&scans}}).WithCache(cache, true)
	if res := eng.Scan(context.Background(), engine.Artifact{Type: shared.ArtifactFile, Size: int64(len(content)), Content: bytes.NewReader(content), SHA256: sha}); res.Verdict != shared.VerdictMalicious {
		t.Fatalf("the scan that fills the cache: %+v", res)
	}
	cfg := config.Marketplace{WebhookSecrets: []string{testSecret}}
	svc, err := New(Options{Config: &cfg, DataDir: dir, Scanner: eng, ShutdownGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	defer func() {
		srv.Close()
		svc.Stop()
	}()
	e := &testEngine{svc: svc, srv: srv, market: market, dir: dir}
	e.accept(t, body)
	market.none(500 * time.Millisecond)
	r, ok, err := svc.store.Get(answered.Key())
	if err != nil || !ok || r.State != StateAnswered || r.Answer == nil || r.Answer.Verdict != shared.VerdictBenign {
		t.Errorf("the answered bounty after its redelivery: %s %+v (%v, %v), want answered benign as bounties.db holds it", r.State, r.Answer, ok, err)
	}
	if s := cache.Stats(); s.Hits != 1 {
		t.Errorf("cache stats %+v: the redelivery was not one for the cache", s)
	}
}

// TestCachedRedeliveryAfterARestartIsNotAnsweredAgain: a bounty answered
// from the cache before a restart is known to have a record after it
// (the horizon of the earlier run's records), so its redelivery is
// acknowledged without an answer.
func TestCachedRedeliveryAfterARestartIsNotAnsweredAgain(t *testing.T) {
	dir := t.TempDir()
	market := newFakeMarket(t)
	content := []byte("xx EICAR yy")
	sum := sha256.Sum256(content)
	extra := map[string]any{"sha256": hex.EncodeToString(sum[:])}
	cache := verdictcache.New(verdictcache.Config{TTL: time.Hour, MaxEntries: 100}, "", nil)
	var scans atomic.Int32
	eng := engine.New(onePlugin{eicarPlugin{&scans}}).WithCache(cache, true)
	e := startTestEngine(t, dir, market, eng)
	e.accept(t, market.bountyJSON(1, market.put("a", content), 30*time.Second, extra))
	if a := market.wait(10 * time.Second); str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("the bounty that fills the cache: %s", a.Raw)
	}
	e.record(t, 1, PhaseAssertion)
	body := market.bountyJSON(2, market.srv.URL+"/artifacts/gone", 30*time.Second, extra)
	e.accept(t, body)
	if a := market.wait(10 * time.Second); a.ID != "2" || str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("answer %s: %s", a.ID, a.Raw)
	}
	e.record(t, 2, PhaseAssertion)
	e.stop()

	e = startTestEngine(t, dir, market, eng)
	if code, reply := e.send(t, "bounty", body, map[string]string{HeaderDelivery: "again"}); code != http.StatusAccepted {
		t.Fatalf("redelivery: HTTP %d %s", code, reply)
	}
	market.none(500 * time.Millisecond)
	if n := market.postCount("2"); n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
	if r := e.record(t, 2, PhaseAssertion); r.State != StateAnswered || r.Redeliveries != 1 {
		t.Errorf("record after the redelivery: %+v", r)
	}
	if s := cache.Stats(); s.Hits < 2 {
		t.Errorf("cache stats %+v: the redelivery was not one for the cache", s)
	}
}

// TestRecordHorizonFull: past maxKnown records the horizon keeps no more
// by key; the bounties expiring before the last one it could not keep
// are then not known new (written first), the later ones still are.
func TestRecordHorizonFull(t *testing.T) {
	h, err := loadHorizon(t.TempDir(), false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	for i := range maxKnown {
		if err := h.note(fmt.Sprint("k", i), exp); err != nil {
			t.Fatal(err)
		}
	}
	over := exp.Add(time.Minute)
	if err := h.note("over", over); err != nil {
		t.Fatal(err)
	}
	if h.absent("over", over) {
		t.Error("a record not kept by key is known absent")
	}
	if h.absent("another", over) {
		t.Error("a bounty expiring with the record not kept is known new")
	}
	if h.absent("k1", over.Add(time.Minute)) {
		t.Error("a record kept by key is known absent")
	}
	if !h.absent("another", over.Add(time.Minute)) {
		t.Error("a bounty expiring after every record is not known new")
	}
}

// TestCachedAnswerAgainAfterALostWriteIsTheSame: the crash window of an
// answer posted beside its record's write. The marketplace took the
// answer, the write never became durable (here: the engine restarted on
// an empty store), no 202 was sent, so the bounty comes again and is
// answered again from the cache: byte for byte the same answer.
func TestCachedAnswerAgainAfterALostWriteIsTheSame(t *testing.T) {
	market := newFakeMarket(t)
	content := []byte("xx EICAR yy")
	sum := sha256.Sum256(content)
	extra := map[string]any{"sha256": hex.EncodeToString(sum[:]), "metadata": map[string]any{"filename": "x.exe"}}
	cache := verdictcache.New(verdictcache.Config{TTL: time.Hour, MaxEntries: 100}, "", nil)
	var scans atomic.Int32
	eng := engine.New(onePlugin{eicarPlugin{&scans}}).WithCache(cache, true)
	e := startTestEngine(t, t.TempDir(), market, eng)
	e.accept(t, market.bountyJSON(1, market.put("a", content), 30*time.Second, extra))
	market.wait(10 * time.Second)
	e.record(t, 1, PhaseAssertion)
	body := market.bountyJSON(2, market.srv.URL+"/artifacts/gone", 30*time.Second, extra)
	e.accept(t, body)
	first := market.wait(10 * time.Second)
	e.stop()

	e = startTestEngine(t, t.TempDir(), market, eng)
	e.accept(t, body)
	again := market.wait(10 * time.Second)
	if first.ID != "2" || again.ID != "2" || !bytes.Equal(first.Raw, again.Raw) {
		t.Errorf("the answer again differs:\n first %s: %s\n again %s: %s", first.ID, first.Raw, again.ID, again.Raw)
	}
	if n := scans.Load(); n != 1 {
		t.Errorf("%d scans, want the one that filled the cache", n)
	}
}

// TestCachedRedeliveryWithoutExpirationIsNotAnsweredAgain: a bounty sent
// without an expiration gets one counted from each delivery's arrival,
// so its redelivery's expiration is later than its record's. With the
// records known by key full (maxKnown live records), the horizon judges
// it by that expiration alone: it must still not be known new, and its
// redelivery is acknowledged without a second answer.
func TestCachedRedeliveryWithoutExpirationIsNotAnsweredAgain(t *testing.T) {
	e, sha := cachedEngine(t, []byte("xx EICAR yy"))
	h := e.svc.store.horizon
	h.mu.Lock()
	room := maxKnown - len(h.known)
	h.mu.Unlock()
	far := time.Now().Add(time.Hour)
	for i := range room {
		if err := h.note(fmt.Sprint("live-", i), far); err != nil {
			t.Fatal(err)
		}
	}
	body := e.market.bountyJSON(2, e.market.srv.URL+"/artifacts/gone", 0, map[string]any{"sha256": sha, "expiration": nil})
	if code, reply := e.send(t, "bounty", body, map[string]string{HeaderDelivery: "first"}); code != http.StatusAccepted {
		t.Fatalf("bounty: HTTP %d %s", code, reply)
	}
	if a := e.market.wait(10 * time.Second); a.ID != "2" || str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("answer %s: %s", a.ID, a.Raw)
	}
	e.record(t, 2, PhaseAssertion)
	if code, reply := e.send(t, "bounty", body, map[string]string{HeaderDelivery: "again"}); code != http.StatusAccepted {
		t.Fatalf("redelivery: HTTP %d %s", code, reply)
	}
	e.market.none(500 * time.Millisecond)
	if n := e.market.postCount("2"); n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
	if r := e.record(t, 2, PhaseAssertion); r.State != StateAnswered || r.Redeliveries != 1 {
		t.Errorf("record after the redelivery: %+v", r)
	}
}

// TestCachedAnswerNotPostedWhileItsHorizonCannotBeSaved: a record past
// the saved horizon cannot be written while the horizon cannot be saved
// (here its temporary file is a folder; a full disk, a read-only folder).
// Known before the answer is posted, that refuses the bounty (503, the
// marketplace retries) instead of posting an answer that no record
// holds; the retry once the horizon is saved again is answered once.
func TestCachedAnswerNotPostedWhileItsHorizonCannotBeSaved(t *testing.T) {
	e, sha := cachedEngine(t, []byte("xx EICAR yy"))
	e.svc.inlineBudget = 10 * time.Second
	blocker := filepath.Join(e.dir, queue.StoreDir, horizonFile+".tmp")
	if err := os.Mkdir(blocker, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blocker, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Past the horizon the first bounty's record raised.
	body := e.market.bountyJSON(6, e.market.srv.URL+"/artifacts/gone", 2*horizonStep, map[string]any{"sha256": sha})
	if code, reply := e.send(t, "bounty", body, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("bounty whose record cannot be written: HTTP %d %s, want 503", code, reply)
	}
	e.market.none(500 * time.Millisecond)
	if n := counter(t, e.reg, "microengine_bounties_answered_unstored_total", nil); n != 0 {
		t.Errorf("unstored answers counted: %v, want 0", n)
	}
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	e.accept(t, body)
	if a := e.market.wait(10 * time.Second); a.ID != "6" || str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("answer %s: %s", a.ID, a.Raw)
	}
	if r := e.record(t, 6, PhaseAssertion); r.State != StateAnswered {
		t.Errorf("record: %+v", r)
	}
	e.market.none(500 * time.Millisecond)
	if n := e.market.postCount("6"); n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
}

// TestCachedAnswerTakenThoughItsWriteFailedIsStoredLater: a record whose
// write failed beside an answer the marketplace took is written again in
// the background, answered, until the store takes it; a redelivery
// (another delivery id: a marketplace that missed the late 202) then
// finds it and is acknowledged without a second answer.
func TestCachedAnswerTakenThoughItsWriteFailedIsStoredLater(t *testing.T) {
	e, sha := cachedEngine(t, []byte("xx EICAR yy"))
	e.svc.inlineBudget = 10 * time.Second
	var failed atomic.Int32
	holdAnsweredWrites(e.svc.store, func(context.Context) error {
		if failed.Add(1) == 1 {
			return errors.New("disk full (test)")
		}
		return nil
	})
	body := e.market.bountyJSON(7, e.market.srv.URL+"/artifacts/gone", time.Minute, map[string]any{"sha256": sha})
	if code, reply := e.send(t, "bounty", body, map[string]string{HeaderDelivery: "first"}); code != http.StatusAccepted {
		t.Fatalf("bounty: HTTP %d %s", code, reply)
	}
	if a := e.market.wait(10 * time.Second); a.ID != "7" || str(a.Body["verdict"]) != "malicious" {
		t.Fatalf("answer %s: %s", a.ID, a.Raw)
	}
	if r := e.record(t, 7, PhaseAssertion); r.State != StateAnswered || r.Answer == nil || r.Answer.Verdict != shared.VerdictMalicious {
		t.Errorf("record stored after its write failed: %+v", r)
	}
	if code, reply := e.send(t, "bounty", body, map[string]string{HeaderDelivery: "again"}); code != http.StatusAccepted {
		t.Fatalf("redelivery: HTTP %d %s", code, reply)
	}
	e.market.none(500 * time.Millisecond)
	if n := e.market.postCount("7"); n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
	if n := openEntries(e.svc.store); n != 0 {
		t.Errorf("%d open entries", n)
	}
}
