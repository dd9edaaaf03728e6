package marketplace

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/queue"
	"github.com/microengine/microengine/shared"
)

// openEmbedded opens the embedded node's store in dir.
func openEmbedded(t *testing.T, dir string, retention time.Duration) *JetStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := config.DefaultQueue()
	node, err := queue.Open(ctx, &q, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenJetStore(ctx, node, retention, nil)
	if err != nil {
		node.Close()
		t.Fatal(err)
	}
	return s
}

// natsServer starts a JetStream server on a loopback port, as a cluster
// node would be, and returns its URL.
func natsServer(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats server did not start")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv.ClientURL()
}

// joinServer opens a store on the server at url, as one engine of a
// cluster.
func joinServer(t *testing.T, url string) *JetStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := config.DefaultQueue()
	q.Servers = []string{url}
	node, err := queue.Open(ctx, &q, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenJetStore(ctx, node, config.DefaultRetention, nil)
	if err != nil {
		node.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestJetStoreDurableAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openEmbedded(t, dir, config.DefaultRetention)
	exp := time.Now().Add(time.Hour)
	b := testBounty(7, exp)
	if isNew, err := s.Put(ctx, b, "d-1", time.Now()); err != nil || !isNew {
		t.Fatalf("put: %v %v", isNew, err)
	}
	// The same delivery, and a new delivery id of the same bounty: one
	// bounty, both counted as redeliveries.
	for _, d := range []string{"d-1", "d-2"} {
		if isNew, err := s.Put(ctx, b, d, time.Now()); err != nil || isNew {
			t.Fatalf("redelivery %s: new %v, %v", d, isNew, err)
		}
	}
	a := &Answer{Verdict: shared.VerdictMalicious}
	if stored, err := s.CommitAnswer(ctx, b.Key(), a, "why", []engine.PluginResult{{Name: "p"}}); err != nil || stored != nil {
		t.Fatalf("commit: %v %v", stored, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The node is this engine's alone while it runs.
	s = openEmbedded(t, dir, config.DefaultRetention)
	q := config.DefaultQueue()
	if _, err := queue.Open(ctx, &q, dir, nil); !errors.Is(err, queue.ErrBusy) {
		t.Errorf("second open: %v, want ErrBusy", err)
	}
	r, ok, err := s.Get(b.Key())
	if err != nil || !ok {
		t.Fatalf("get after reopen: %v %v", ok, err)
	}
	if r.State != StateOpen || r.Answer == nil || r.Answer.Verdict != shared.VerdictMalicious || r.Redeliveries != 2 || len(r.Deliveries) != 2 {
		t.Errorf("record after reopen: %+v", r)
	}
	var keys int
	s.OpenKeysAfter(nil, func([]byte, time.Time) bool { keys++; return true })
	if keys != 1 {
		t.Errorf("%d open keys after reopen, want 1", keys)
	}
	// A second answer is refused: the committed one is returned.
	if stored, err := s.CommitAnswer(ctx, b.Key(), &Answer{Verdict: shared.VerdictBenign}, "", nil); err != nil || stored == nil || stored.Verdict != shared.VerdictMalicious {
		t.Errorf("second commit: %v %v", stored, err)
	}
	if done, err := s.Finish(ctx, b.Key(), Outcome{State: StateAnswered, At: time.Now()}); err != nil || !done {
		t.Fatalf("finish: %v %v", done, err)
	}
	if done, err := s.Finish(ctx, b.Key(), Outcome{State: StateFailed, At: time.Now()}); err != nil || done {
		t.Errorf("second finish: %v %v", done, err)
	}
	keys = 0
	s.OpenKeysAfter(nil, func([]byte, time.Time) bool { keys++; return true })
	if keys != 0 {
		t.Errorf("%d open keys after finish, want 0", keys)
	}
	// A redelivery of a finished bounty does not reopen it.
	if isNew, err := s.Put(ctx, b, "d-3", time.Now()); err != nil || isNew {
		t.Errorf("redelivery after finish: %v %v", isNew, err)
	}
	r, _, _ = s.Get(b.Key())
	if r.State != StateAnswered || r.Answer.Verdict != shared.VerdictMalicious {
		t.Errorf("finished record: %+v", r)
	}
	// Nor leaves the open entry written beside its record.
	keys = 0
	s.OpenKeysAfter(nil, func([]byte, time.Time) bool { keys++; return true })
	if keys != 0 {
		t.Errorf("%d open keys after a finished bounty's redelivery, want 0", keys)
	}
	counts, err := s.Counts()
	if err != nil || counts[StateAnswered] != 1 || len(counts) != 1 {
		t.Errorf("counts %v %v", counts, err)
	}
	s.Close()
}

// TestJetStoreEnginesShareOneLifecycle: two engines on one server take
// each bounty once, commit one answer between them, finish it once, and a
// claim that is not renewed lapses to the other engine.
func TestJetStoreEnginesShareOneLifecycle(t *testing.T) {
	ctx := context.Background()
	url := natsServer(t)
	// The claims taken in the race below keep their full claimTTL (10 s):
	// with the short claims the lapse is tested with, the first ones
	// taken could lapse while a loaded machine was still racing for the
	// rest, and be offered, and taken, again.
	a, b := joinServer(t, url), joinServer(t, url)
	const n = 20
	for i := range n {
		if _, err := a.Put(ctx, testBounty(int64(i), time.Now().Add(time.Hour)), fmt.Sprint("d", i), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// b sees them through its watch of the open bucket.
	waitOpen := func(s *JetStore, want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := 0
			s.OpenKeysAfter(nil, func([]byte, time.Time) bool { got++; return true })
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d open bounties visible, want %d", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitOpen(b, n)

	// Both race for every bounty: each is taken by exactly one.
	var mu sync.Mutex
	takenBy := map[int64][]string{}
	var wg sync.WaitGroup
	for name, s := range map[string]*JetStore{"a": a, "b": b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				_, ok, err := s.Take(ctx, bountyKey(int64(i), PhaseAssertion))
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					mu.Lock()
					takenBy[int64(i)] = append(takenBy[int64(i)], name)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for i := range int64(n) {
		if len(takenBy[i]) != 1 {
			t.Errorf("bounty %d taken by %v", i, takenBy[i])
		}
	}
	// A bounty claimed by the other engine is not offered to this one.
	waitOpen(a, countTaken(takenBy, "a"))

	// Two engines commit different answers: one answer stands, both post it.
	key := bountyKey(0, PhaseAssertion)
	answers := make(chan *Answer, 2)
	for _, v := range []shared.Verdict{shared.VerdictMalicious, shared.VerdictBenign} {
		s := a
		if v == shared.VerdictBenign {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := &Answer{Verdict: v}
			stored, err := s.CommitAnswer(ctx, key, mine, "", nil)
			if err != nil {
				t.Error(err)
				return
			}
			if stored != nil {
				mine = stored
			}
			answers <- mine
		}()
	}
	wg.Wait()
	if x, y := <-answers, <-answers; x.Verdict != y.Verdict {
		t.Errorf("conflicting answers: %s and %s", x.Verdict, y.Verdict)
	}
	finished := 0
	for _, s := range []*JetStore{a, b} {
		if done, err := s.Finish(ctx, key, Outcome{State: StateAnswered, At: time.Now()}); err != nil {
			t.Fatal(err)
		} else if done {
			finished++
		}
	}
	if finished != 1 {
		t.Errorf("finished %d times", finished)
	}

	// A claim that is not renewed lapses: the other engine takes it, and
	// the takes are counted across engines.
	key = bountyKey(1, PhaseAssertion)
	holder, other := a, b
	if takenBy[1][0] == "b" {
		holder, other = b, a
	}
	if _, ok, _ := other.Take(ctx, key); ok {
		t.Fatal("a live claim was taken over")
	}
	// Renewed for a short life, then left to lapse.
	holder.claimTTL = 300 * time.Millisecond
	if err := holder.Renew(ctx, key); err != nil {
		t.Fatal(err)
	}
	var takes int
	for deadline := time.Now().Add(10 * time.Second); ; {
		var ok bool
		var err error
		if takes, ok, err = other.Take(ctx, key); err != nil {
			t.Fatal(err)
		} else if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the claim never lapsed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if takes != 2 {
		t.Errorf("after the claim lapsed: takes %d, want 2", takes)
	}
	if err := holder.Renew(ctx, key); !errors.Is(err, errHeld) {
		t.Errorf("renewing a lost claim: %v", err)
	}
}

// TestJetStoreRereadsWhatAnotherEngineWrote: an engine changes the
// records it wrote without reading them first (a compare-and-set on the
// revision it got), so one that another engine changed since is read
// again: the other's answer stands, and its finish is not repeated.
func TestJetStoreRereadsWhatAnotherEngineWrote(t *testing.T) {
	ctx := context.Background()
	url := natsServer(t)
	a, b := joinServer(t, url), joinServer(t, url)
	bounty := testBounty(42, time.Now().Add(time.Hour))
	key := bounty.Key()
	if _, err := a.Put(ctx, bounty, "d-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if stored, err := b.CommitAnswer(ctx, key, &Answer{Verdict: shared.VerdictBenign}, "", nil); err != nil || stored != nil {
		t.Fatalf("b's commit: %v %v", stored, err)
	}
	stored, err := a.CommitAnswer(ctx, key, &Answer{Verdict: shared.VerdictMalicious}, "", nil)
	if err != nil || stored == nil || stored.Verdict != shared.VerdictBenign {
		t.Fatalf("a's commit after b's: stored %+v, %v; want b's benign", stored, err)
	}
	// a's redelivery count goes onto the record b wrote.
	if isNew, err := a.Put(ctx, bounty, "d-2", time.Now()); err != nil || isNew {
		t.Fatalf("redelivery: %v %v", isNew, err)
	}
	if done, err := b.Finish(ctx, key, Outcome{State: StateAnswered, At: time.Now()}); err != nil || !done {
		t.Fatalf("b's finish: %v %v", done, err)
	}
	if done, err := a.Finish(ctx, key, Outcome{State: StateFailed, At: time.Now()}); err != nil || done {
		t.Fatalf("a's finish after b's: %v %v", done, err)
	}
	r, ok, err := a.Get(key)
	if err != nil || !ok || r.State != StateAnswered || r.Answer == nil || r.Answer.Verdict != shared.VerdictBenign || r.Redeliveries != 1 {
		t.Errorf("record: %+v %v %v", r, ok, err)
	}
}

func countTaken(by map[int64][]string, name string) int {
	n := 0
	for _, who := range by {
		if len(who) == 1 && who[0] == name {
			n++
		}
	}
	return n
}

// TestJetStoreRetention: the records bucket keeps the audit trail for the
// retention after each record's last write, and never less than an open
// bounty can live.
func TestJetStoreRetention(t *testing.T) {
	s := openEmbedded(t, t.TempDir(), 3*24*time.Hour)
	defer s.Close()
	ctx := context.Background()
	st, err := s.records.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 3*24*time.Hour {
		t.Errorf("records TTL %s, want 72h", st.TTL())
	}
	s.Close()
	s = openEmbedded(t, t.TempDir(), time.Minute)
	st, _ = s.records.Status(ctx)
	if st.TTL() < maxBountyLifetime {
		t.Errorf("records TTL %s: an open bounty would vanish", st.TTL())
	}
}

// TestJetStorePoisonRecords: a record that does not decode is listed,
// finished once as failed, and does not stop the bounties behind it.
func TestJetStorePoisonRecords(t *testing.T) {
	dir := t.TempDir()
	market := newFakeMarket(t)
	uri := market.put("e", []byte("EICAR"))
	s := openEmbedded(t, dir, config.DefaultRetention)
	ctx := context.Background()
	bad, err := ParseBounty(market.bountyJSON(500, uri, time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	good, err := ParseBounty(market.bountyJSON(501, uri, time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []Bounty{bad, good} {
		if _, err := s.Put(ctx, b, "", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.records.Put(ctx, hexKey(bad.Key()), []byte(`{"bounty": [`)); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s.List(false, func(Record) bool { n++; return true }); err != nil || n != 2 {
		t.Errorf("list: %d records, %v", n, err)
	}
	s.Close()
	e := startTestEngine(t, dir, market, eicarScanner())
	if a := market.wait(10 * time.Second); a.ID != "501" || str(a.Body["verdict"]) != "malicious" {
		t.Errorf("answer %s: %s", a.ID, a.Raw)
	}
	if r := e.record(t, 500, PhaseAssertion); r.State != StateFailed {
		t.Errorf("poison record: %s", r.State)
	}
}

// TestJetStoreFinishedMarkersExpire: a finished bounty's purge marker in
// the open bucket carries a TTL (JetStream keeps an index entry per
// subject while it stays: one per bounty ever finished), and an engine
// whose watcher missed it drops the entry at its next claim.
func TestJetStoreFinishedMarkersExpire(t *testing.T) {
	ctx := context.Background()
	s := openEmbedded(t, t.TempDir(), config.DefaultRetention)
	defer s.Close()
	if !s.markerTTL {
		t.Fatal("the embedded node's open bucket has no marker TTL")
	}
	b := testBounty(9, time.Now().Add(time.Hour))
	if _, err := s.Put(ctx, b, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(ctx, b.Key(), Outcome{State: StateAnswered, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	stream, err := s.node.JS.Stream(ctx, "KV_"+bucketOpenJS)
	if err != nil {
		t.Fatal(err)
	}
	k := hexKey(b.Key())
	m, err := stream.GetLastMsgForSubject(ctx, "$KV."+bucketOpenJS+"."+k)
	if err != nil {
		t.Fatal(err)
	}
	if op, ttl := m.Header.Get("KV-Operation"), m.Header.Get("Nats-TTL"); op != "PURGE" || ttl != openMarkerTTL.String() {
		t.Errorf("the finished bounty's marker: operation %q, TTL %q; want PURGE, %s", op, ttl, openMarkerTTL)
	}

	// A marker gone before the watcher saw it leaves a stale entry: the
	// claim that finds no open entry drops it.
	s.mu.Lock()
	s.index[k] = openEntry{Expiration: b.Expiration}
	s.mu.Unlock()
	if _, ok, err := s.Take(ctx, b.Key()); err != nil || ok {
		t.Fatalf("take of a finished bounty: %v %v", ok, err)
	}
	keys := 0
	s.OpenKeysAfter(nil, func([]byte, time.Time) bool { keys++; return true })
	if keys != 0 {
		t.Errorf("%d open keys after the claim found none, want 0", keys)
	}
}

// TestJetStoreAnsweredBountyResumedByItsRedelivery: a bounty stored with
// its answer (from the verdict cache) has no open entry until its webhook
// is acknowledged; an engine that stops before that leaves it to the
// marketplace's redelivery, which finds it open with its answer and
// indexes it, so the same answer is posted.
func TestJetStoreAnsweredBountyResumedByItsRedelivery(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openEmbedded(t, dir, config.DefaultRetention)
	b := testBounty(11, time.Now().Add(time.Hour))
	a := &Answer{Verdict: shared.VerdictMalicious}
	if created, err := s.putAnswered(ctx, b, "d-1", time.Now(), a, "cached", nil); err != nil || !created {
		t.Fatalf("putAnswered: %v %v", created, err)
	}
	if created, err := s.putAnswered(ctx, b, "d-2", time.Now(), &Answer{Verdict: shared.VerdictBenign}, "", nil); err != nil || created {
		t.Fatalf("putAnswered again: %v %v", created, err)
	}
	s.Close()

	s = openEmbedded(t, dir, config.DefaultRetention)
	defer s.Close()
	count := func() (n int) {
		s.OpenKeysAfter(nil, func([]byte, time.Time) bool { n++; return true })
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("%d open entries before the redelivery", n)
	}
	if isNew, err := s.Put(ctx, b, "d-3", time.Now()); err != nil || isNew {
		t.Fatalf("redelivery: %v %v", isNew, err)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d open entries after the redelivery, want 1", n)
	}
	r, ok, err := s.Get(b.Key())
	if err != nil || !ok || r.State != StateOpen || r.Answer == nil || r.Answer.Verdict != shared.VerdictMalicious || r.Reason != "cached" {
		t.Fatalf("record: %+v %v %v", r, ok, err)
	}
	if stored, err := s.CommitAnswer(ctx, b.Key(), &Answer{Verdict: shared.VerdictBenign}, "", nil); err != nil || stored == nil || stored.Verdict != shared.VerdictMalicious {
		t.Errorf("commit after the redelivery: %+v %v", stored, err)
	}
}

// TestJetStoreRecentStaysBounded: the records an engine remembers (to
// change them without reading them first) are bounded, and a full memory
// drops the bounties that expired (another engine of a cluster finished
// them, say) to make room.
func TestJetStoreRecentStaysBounded(t *testing.T) {
	s := openEmbedded(t, t.TempDir(), config.DefaultRetention)
	defer s.Close()
	past, future := time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	for i := range maxRecent {
		s.remember(fmt.Sprint("expired-", i), Record{Bounty: testBounty(int64(i), past), State: StateOpen}, 1)
	}
	s.remember("new", Record{Bounty: testBounty(1e9, future), State: StateOpen}, 1)
	if _, _, ok := s.recalled("new"); !ok {
		t.Fatal("a full memory of expired bounties kept no room for a new one")
	}
	for i := range maxRecent {
		s.remember(fmt.Sprint("live-", i), Record{Bounty: testBounty(int64(i), future), State: StateOpen}, 1)
	}
	s.recentMu.Lock()
	n := len(s.recent)
	s.recentMu.Unlock()
	if n > maxRecent {
		t.Errorf("%d records remembered, over the bound of %d", n, maxRecent)
	}
	s.remember("new", Record{Bounty: testBounty(1e9, future), State: StateAnswered}, 2)
	if _, _, ok := s.recalled("new"); ok {
		t.Error("a finished record is still remembered")
	}
}

// TestRestartedEngineTakesBackItsClaimsAtOnce: an engine of a cluster
// killed while it held bounties (stored taken by its webhook, say), then
// restarted on the same data directory, takes them back at once: a
// bounty of the simulator's 10 s life caught mid-answer by the kill
// would otherwise wait out the 10 s claim and expire unanswered. Another
// engine still waits for the claim to lapse.
func TestRestartedEngineTakesBackItsClaimsAtOnce(t *testing.T) {
	url := natsServer(t)
	market := newFakeMarket(t)
	uri := market.put("e", []byte("EICAR"))
	dir := t.TempDir()
	open := func(dir string) *Service {
		cfg := config.Marketplace{WebhookSecrets: []string{testSecret}}
		q := config.DefaultQueue()
		q.Servers = []string{url}
		svc, err := New(Options{Config: &cfg, DataDir: dir, Scanner: eicarScanner(), Queue: &q, ShutdownGrace: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	// Not started: the webhook stores the bounty taken by this engine, and
	// no worker answers it before the engine is gone.
	first := open(dir)
	srv := httptest.NewServer(first.Handler())
	(&testEngine{svc: first, srv: srv, market: market, dir: dir}).accept(t, market.bountyJSON(60, uri, time.Minute, nil))
	stored := time.Now()
	srv.Close()
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	key := bountyKey(60, PhaseAssertion)

	other := open(t.TempDir())
	defer other.Stop()
	_, mine, err := other.store.Take(context.Background(), key)
	switch {
	case err != nil:
		t.Fatal(err)
	case mine && time.Since(stored) >= claimTTL/2:
		// A machine stalled for most of the claim's life let it lapse:
		// another engine rightly took it, and nothing is left to check.
		t.Skipf("the claim lapsed after %s: the machine stalled", time.Since(stored))
	case mine:
		t.Fatal("another engine took the bounty within its holder's claim")
	}
	restarted := open(dir)
	defer restarted.Stop()
	if _, mine, err := restarted.store.Take(context.Background(), key); err != nil || !mine {
		t.Errorf("the engine restarted on the same data directory did not take back its own claim: %v, %v", mine, err)
	}
}

// TestBountyHeldAtItsDeadlineIsTakenOverOnce: a bounty whose holder's
// claim has not lapsed (its engine's machine lost moments ago) is taken
// over by another engine once it is within that engine's rescue lead of
// its expiration — not before, not by an engine without one, and by one
// engine only (a second rescuer waits for the claim to lapse).
func TestBountyHeldAtItsDeadlineIsTakenOverOnce(t *testing.T) {
	url := natsServer(t)
	holder, early, rescuer, second := joinServer(t, url), joinServer(t, url), joinServer(t, url), joinServer(t, url)
	holder.PreclaimStored(true)
	early.RescueWithin(time.Second)
	rescuer.RescueWithin(time.Hour) // the bounty below is within it at once
	second.RescueWithin(time.Hour)
	ctx := context.Background()
	b := testBounty(80, time.Now().Add(time.Minute))
	stored := time.Now()
	if created, err := holder.Put(ctx, b, "d80", stored); err != nil || !created {
		t.Fatalf("put: %v, %v", created, err)
	}
	takes := func(s *JetStore) bool {
		t.Helper()
		_, mine, err := s.Take(ctx, b.Key())
		if err != nil {
			t.Fatal(err)
		}
		return mine
	}
	tookEarly := takes(early)
	if time.Since(stored) >= claimTTL/2 {
		t.Skipf("the holder's claim may have lapsed: the machine stalled %s", time.Since(stored))
	}
	if tookEarly {
		t.Fatal("a bounty a minute from its expiration was taken from its holder")
	}
	if !takes(rescuer) {
		t.Fatal("the bounty within the rescue lead was not taken over")
	}
	if takes(second) && time.Since(stored) < claimTTL/2 {
		t.Error("a bounty taken over was taken over again before its claim lapsed")
	}
	// Past its expiration a bounty is its holder's to record (answered,
	// if its last POST went through), not another's to record expired.
	expired := testBounty(81, time.Now().Add(-time.Second))
	stored = time.Now()
	if created, err := holder.Put(ctx, expired, "d81", stored); err != nil || !created {
		t.Fatalf("put: %v, %v", created, err)
	}
	if _, mine, err := rescuer.Take(ctx, expired.Key()); err != nil || (mine && time.Since(stored) < claimTTL/2) {
		t.Errorf("an expired bounty was taken from its holder: %v, %v", mine, err)
	}
}
