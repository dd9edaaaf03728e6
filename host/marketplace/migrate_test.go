package marketplace

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/marketplace/bountiesdb"
	"github.com/microengine/microengine/host/marketplace/bountiesdb/bountiesdbtest"
	"github.com/microengine/microengine/shared"
)

// oldRecord is r as an engine before JetStream stored it in bounties.db:
// its JSON under the bounty's key.
func oldRecord(t *testing.T, r Record) bountiesdbtest.Record {
	t.Helper()
	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return bountiesdbtest.Record{Key: r.Bounty.Key(), Raw: raw, Open: r.State == StateOpen, Expiration: r.Bounty.Expiration, Finished: r.FinishedAt}
}

// waitMoved waits until the engine has moved all of bounties.db in and
// set the file aside.
func waitMoved(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat(filepath.Join(dir, bountiesdb.File+MigratedSuffix))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bounties.db not set aside: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, bountiesdb.File)); err == nil {
		t.Error("bounties.db still in place: it would be moved again")
	}
}

// TestBountiesDBMovedIntoJetStream: an engine upgraded over a bounties.db
// answers its open bounties (posting the answer committed before, not a
// new one), keeps its finished ones in the audit trail, and sets the file
// aside.
func TestBountiesDBMovedIntoJetStream(t *testing.T) {
	dir := t.TempDir()
	market := newFakeMarket(t)
	uri := market.put("clean", []byte("clean"))
	open, err := ParseBounty(market.bountyJSON(40, uri, time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	done, err := ParseBounty(market.bountyJSON(41, uri, time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	// Committed before the old engine stopped: malicious, though the
	// content is clean. The committed answer is the one posted.
	committed := &Answer{Verdict: shared.VerdictMalicious, Metadata: newMetadata("0.0.9", open, engine.Result{Verdict: shared.VerdictMalicious, MalwareFamily: "Old"})}
	bountiesdbtest.Write(t, filepath.Join(dir, bountiesdb.File),
		oldRecord(t, Record{Bounty: open, State: StateOpen, ReceivedAt: now, Deliveries: []string{"d40"}, Answer: committed, Reason: "committed by 0.0.9"}),
		oldRecord(t, Record{Bounty: done, State: StateAnswered, ReceivedAt: now, FinishedAt: now, Answer: &Answer{Verdict: shared.VerdictBenign}}),
	)

	e := startTestEngine(t, dir, market, eicarScanner())
	a := market.wait(10 * time.Second)
	if a.ID != "40" || str(a.Body["verdict"]) != "malicious" {
		t.Errorf("answer %s: %s, want the committed malicious answer of 40", a.ID, a.Raw)
	}
	if r := e.record(t, 41, PhaseAssertion); r.State != StateAnswered || r.Answer == nil || r.Answer.Verdict != shared.VerdictBenign {
		t.Errorf("finished bounty moved as %+v", r)
	}
	if r := e.record(t, 40, PhaseAssertion); len(r.Deliveries) != 1 || r.Deliveries[0] != "d40" {
		t.Errorf("the open bounty's delivery ids moved as %q", r.Deliveries)
	}
	waitMoved(t, dir)
	// A redelivery through the old delivery id is the same bounty.
	if code, reply := e.send(t, "bounty", market.bountyJSON(40, uri, time.Minute, nil), map[string]string{HeaderDelivery: "d40"}); code != 202 {
		t.Errorf("redelivery: HTTP %d %s", code, reply)
	}
	market.none(200 * time.Millisecond)
}

// TestBountiesDBMovesWhatCannotWaitFirst: before the engine starts, the
// open bounties and the finished ones not expired yet (a redelivery must
// find them) are in JetStream; the audit trail follows once it runs, and
// a move stopped before that goes on at the next start.
func TestBountiesDBMovesWhatCannotWaitFirst(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().UTC()
	open := testBounty(1, now.Add(time.Hour))
	unexpired := testBounty(2, now.Add(time.Hour))
	expired := testBounty(3, now.Add(-time.Hour))
	answered := &Answer{Verdict: shared.VerdictBenign}
	bountiesdbtest.Write(t, filepath.Join(dir, bountiesdb.File),
		oldRecord(t, Record{Bounty: open, State: StateOpen, ReceivedAt: now}),
		oldRecord(t, Record{Bounty: unexpired, State: StateAnswered, ReceivedAt: now, FinishedAt: now, Answer: answered}),
		oldRecord(t, Record{Bounty: expired, State: StateAnswered, ReceivedAt: now.Add(-2 * time.Hour), FinishedAt: now.Add(-90 * time.Minute), Answer: answered}),
	)
	cfg := config.Marketplace{WebhookSecrets: []string{testSecret}}
	opts := Options{Config: &cfg, DataDir: dir, Scanner: eicarScanner(), ShutdownGrace: time.Second}
	for range 2 { // stopped before it ran: the move is made again
		svc, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		for key, want := range map[string]bool{string(open.Key()): true, string(unexpired.Key()): true, string(expired.Key()): false} {
			if _, ok, err := svc.store.Get([]byte(key)); err != nil || ok != want {
				t.Errorf("bounty %x in JetStream before the start: %v (%v), want %v", key, ok, err, want)
			}
		}
		if err := svc.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, bountiesdb.File)); err != nil {
		t.Fatalf("bounties.db set aside before its audit trail was moved: %v", err)
	}

	svc, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	svc.Start()
	defer svc.Stop()
	waitMoved(t, dir)
	r, ok, err := svc.store.Get(expired.Key())
	if err != nil || !ok || r.State != StateAnswered || r.Answer == nil || r.Answer.Verdict != shared.VerdictBenign {
		t.Errorf("the expired bounty's record moved as %+v (%v, %v)", r, ok, err)
	}
}

// TestOldPoisonRecordsAreMovedAndAnsweredUnknown: records an older version
// stored in bounties.db with metadata too deep to read back are moved
// without it and answered unknown, and the ordinary bounties beside them
// are answered as usual.
func TestOldPoisonRecordsAreMovedAndAnsweredUnknown(t *testing.T) {
	dir := t.TempDir()
	market := newFakeMarket(t)
	uri := market.put("e", []byte("EICAR"))
	const poison, ordinary = 30, 5
	var recs []bountiesdbtest.Record
	for i := range poison + ordinary {
		id := int64(100000 + i)
		if i >= poison {
			id = int64(200000 + i - poison)
		}
		b, err := ParseBounty(market.bountyJSON(id, uri, time.Minute, nil))
		if err != nil {
			t.Fatal(err)
		}
		rec := oldRecord(t, Record{Bounty: b, State: StateOpen, ReceivedAt: time.Now()})
		if i < poison {
			// Stored before round trips were checked: unreadable whole.
			b.Metadata = json.RawMessage(`{"x":0}`)
			rec = oldRecord(t, Record{Bounty: b, State: StateOpen, ReceivedAt: time.Now()})
			rec.Raw = []byte(strings.Replace(string(rec.Raw), `{"x":0}`, deepMetadata(10000), 1))
			if json.Unmarshal(rec.Raw, new(Record)) == nil {
				t.Fatal("the poison record reads back")
			}
		}
		recs = append(recs, rec)
	}
	bountiesdbtest.Write(t, filepath.Join(dir, bountiesdb.File), recs...)

	e := startTestEngine(t, dir, market, eicarScanner())
	deadline := time.Now().Add(30 * time.Second)
	for i := range ordinary {
		id := strconv.Itoa(200000 + i)
		for market.postCount(id) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("ordinary bounty %s was never answered", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for i := range poison {
		r := e.record(t, int64(100000+i), PhaseAssertion)
		if r.State != StateAnswered || r.Answer == nil || r.Answer.Verdict != shared.VerdictUnknown || !strings.Contains(r.Reason, "could not be stored whole") {
			t.Fatalf("poison record %d: %s %+v %q", 100000+i, r.State, r.Answer, r.Reason)
		}
	}
	// A redelivery of a poison bounty is acknowledged, not refused (503),
	// and recognised: not answered again.
	e.accept(t, market.bountyJSON(100000, uri, time.Minute, nil))
	waitCounter(t, e.reg, "microengine_bounties_duplicate_total", nil, 1)
	if got := market.postCount("100000"); got != 1 {
		t.Errorf("poison bounty posted %d times", got)
	}
}

// TestRedeliveryFindsWhatTheMoveHasNotReachedYet: a record of bounties.db
// that the file's indexes lost (answered, or open with its answer
// committed) is moved only by the part of the move made while the engine
// runs, which may take minutes. A redelivery of it arriving before that is
// the same bounty, not a new one: the answered one is not answered again,
// the open one keeps its committed answer. The move's background part is
// not started here (no Start), so the webhook alone must find them.
func TestRedeliveryFindsWhatTheMoveHasNotReachedYet(t *testing.T) {
	dir := t.TempDir()
	market := newFakeMarket(t)
	uri := market.put("e", []byte("EICAR"))
	answered, err := ParseBounty(market.bountyJSON(50, uri, time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	open, err := ParseBounty(market.bountyJSON(51, uri, time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	committed := &Answer{Verdict: shared.VerdictSuspicious}
	lost := func(r bountiesdbtest.Record) bountiesdbtest.Record {
		r.Open, r.Finished = false, time.Time{} // in no index
		return r
	}
	bountiesdbtest.Write(t, filepath.Join(dir, bountiesdb.File),
		lost(oldRecord(t, Record{Bounty: answered, State: StateAnswered, ReceivedAt: now, FinishedAt: now, Answer: &Answer{Verdict: shared.VerdictBenign}})),
		lost(oldRecord(t, Record{Bounty: open, State: StateOpen, ReceivedAt: now, Answer: committed})),
	)
	cfg := config.Marketplace{WebhookSecrets: []string{testSecret}}
	svc, err := New(Options{Config: &cfg, DataDir: dir, Scanner: eicarScanner(), ShutdownGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	defer func() {
		srv.Close()
		svc.Stop()
	}()
	e := &testEngine{svc: svc, srv: srv, market: market, dir: dir}
	for _, id := range []int64{50, 51} {
		e.accept(t, market.bountyJSON(id, uri, time.Minute, nil))
	}
	r, ok, err := svc.store.Get(answered.Key())
	if err != nil || !ok || r.State != StateAnswered || r.Answer == nil || r.Answer.Verdict != shared.VerdictBenign {
		t.Errorf("the answered bounty after its redelivery: %s %+v (%v, %v), want answered benign as bounties.db holds it", r.State, r.Answer, ok, err)
	}
	r, ok, err = svc.store.Get(open.Key())
	if err != nil || !ok || r.Answer == nil || r.Answer.Verdict != shared.VerdictSuspicious {
		t.Errorf("the open bounty after its redelivery: %s %+v (%v, %v), want its committed suspicious answer", r.State, r.Answer, ok, err)
	}
}

// TestOldRecordUnderAnotherKeyStandsForItsKey: a record of bounties.db
// that is not of the bounty its key names (a JSON null; bounty 92's record
// under 91's key) is moved as a damaged record of its key, listed, and
// answers nothing; bounty 92's own webhook is a new bounty, answered at
// its own response_url.
func TestOldRecordUnderAnotherKeyStandsForItsKey(t *testing.T) {
	dir := t.TempDir()
	market := newFakeMarket(t)
	uri := market.put("e", []byte("EICAR"))
	b92, err := ParseBounty(market.bountyJSON(92, uri, time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	b92.ResponseURL = strings.Replace(b92.ResponseURL, "/92", "/91", 1)
	misfiled := oldRecord(t, Record{Bounty: b92, State: StateOpen, ReceivedAt: time.Now()})
	misfiled.Key = bountyKey(91, PhaseAssertion)
	bountiesdbtest.Write(t, filepath.Join(dir, bountiesdb.File),
		bountiesdbtest.Record{Key: bountyKey(90, PhaseAssertion), Raw: []byte(`null`), Open: true, Expiration: time.Now().Add(time.Minute)},
		misfiled,
	)
	e := startTestEngine(t, dir, market, eicarScanner())
	waitMoved(t, dir)
	e.accept(t, market.bountyJSON(92, uri, time.Minute, nil))
	if a := market.wait(10 * time.Second); a.ID != "92" {
		t.Errorf("answer %s: %s, want bounty 92's own", a.ID, a.Raw)
	}
	for _, id := range []int64{90, 91} {
		r := e.record(t, id, PhaseAssertion)
		if r.Damaged == "" || r.Answer != nil {
			t.Errorf("record %d moved as %s %+v, damaged %q", id, r.State, r.Answer, r.Damaged)
		}
	}
	if n := market.postCount("91"); n != 0 {
		t.Errorf("bounty 92's record under 91's key answered %d times", n)
	}
}
