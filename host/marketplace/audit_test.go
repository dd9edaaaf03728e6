package marketplace

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/queue"
	"github.com/microengine/microengine/shared"
)

// openWithGrace is openEmbedded keeping records grace after their
// bounty's expiration.
func openWithGrace(t *testing.T, dir string, retention, grace time.Duration) *JetStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := config.DefaultQueue()
	node, err := queue.Open(ctx, &q, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := openJetStore(ctx, node, retention, grace, nil)
	if err != nil {
		node.Close()
		t.Fatal(err)
	}
	return s
}

// listed returns the bounties List gives, newest first, by id.
func listed(t *testing.T, s *JetStore) map[int64][]Record {
	t.Helper()
	out := map[int64][]Record{}
	if err := s.List(true, func(r Record) bool { out[r.Bounty.ID] = append(out[r.Bounty.ID], r); return true }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAuditRecordLeavesAfterExpiryAndGrace: a finished bounty's record
// recognises a redelivery until its bounty's expiration and the grace
// after it, and then leaves the records bucket (whose per-key index is
// what JetStream holds in memory), while the bounty is still listed, once,
// from the audit stream. An open bounty expiring later keeps its record.
func TestAuditRecordLeavesAfterExpiryAndGrace(t *testing.T) {
	ctx := context.Background()
	s := openWithGrace(t, t.TempDir(), config.DefaultRetention, time.Second)
	defer s.Close()
	if !s.recordTTL {
		t.Fatal("the embedded node takes no per-message TTL")
	}
	now := time.Now()
	done := testBounty(1, now.Add(2*time.Second))
	open := testBounty(2, now.Add(time.Hour))
	for _, b := range []Bounty{done, open} {
		if isNew, err := s.Put(ctx, b, "first", now); err != nil || !isNew {
			t.Fatalf("put %d: new %v, %v", b.ID, isNew, err)
		}
	}
	answer := &Answer{Verdict: shared.VerdictMalicious}
	if _, err := s.CommitAnswer(ctx, done.Key(), answer, "", nil); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Finish(ctx, done.Key(), Outcome{State: StateAnswered, At: time.Now()}); err != nil || !ok {
		t.Fatalf("finish: %v, %v", ok, err)
	}

	// Redelivered before its expiration: recognised, nothing new.
	if isNew, err := s.Put(ctx, done, "again", time.Now()); err != nil || isNew {
		t.Fatalf("redelivery: new %v, %v", isNew, err)
	}
	r, ok, err := s.Get(done.Key())
	if err != nil || !ok || r.State != StateAnswered || r.Answer == nil || r.Answer.Verdict != shared.VerdictMalicious || r.Redeliveries != 1 {
		t.Fatalf("record after the redelivery: %+v, %v, %v", r, ok, err)
	}
	if got := listed(t, s); len(got[1]) != 1 || got[1][0].State != StateAnswered || len(got[2]) != 1 || got[2][0].State != StateOpen {
		t.Fatalf("listed before the grace: %+v", got)
	}

	// After its expiration and the grace (3 s from now), its record goes.
	k := hexKey(done.Key())
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := s.records.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the finished bounty's record is still in the records bucket a minute after its expiration")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if gone := time.Now(); gone.Before(done.Expiration.Add(s.grace)) {
		t.Errorf("the record left at %s, before its expiration and grace (%s)", gone.Format(time.StampMilli), done.Expiration.Add(s.grace).Format(time.StampMilli))
	}
	if _, err := s.records.Get(ctx, hexKey(open.Key())); err != nil {
		t.Fatalf("the open bounty's record: %v", err)
	}
	got := listed(t, s)
	if len(got[1]) != 1 || got[1][0].State != StateAnswered || got[1][0].Answer == nil ||
		got[1][0].Answer.Verdict != shared.VerdictMalicious || got[1][0].Audited {
		t.Errorf("the finished bounty as listed from the audit stream: %+v", got[1])
	}
	if len(got[2]) != 1 || got[2][0].State != StateOpen {
		t.Errorf("the open bounty as listed: %+v", got[2])
	}
	if s.legacyMayExist(ctx) {
		t.Error("a new store reads its whole records bucket to list")
	}
}

// TestAuditFinishCutShortIsMended: a finish whose record was written but
// whose audit append was not (a crash between the two) is appended by the
// next finish of the bounty, which finds its open entry still there.
func TestAuditFinishCutShortIsMended(t *testing.T) {
	ctx := context.Background()
	s := openEmbedded(t, t.TempDir(), config.DefaultRetention)
	defer s.Close()
	b := testBounty(3, time.Now().Add(time.Hour))
	if _, err := s.Put(ctx, b, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	// The record's write of Finish alone.
	err := s.update(ctx, hexKey(b.Key()), func(r *Record) error {
		Outcome{State: StateExpired, At: time.Now(), Reason: "cut short"}.applyTo(r)
		r.Audited = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := listed(t, s); len(got[3]) != 0 {
		t.Fatalf("listed before the audit: %+v", got[3])
	}
	if ok, err := s.Finish(ctx, b.Key(), Outcome{State: StateExpired, At: time.Now()}); err != nil || ok {
		t.Fatalf("second finish: %v, %v", ok, err)
	}
	got := listed(t, s)
	if len(got[3]) != 1 || got[3][0].State != StateExpired || got[3][0].Reason != "cut short" {
		t.Errorf("listed after the mend: %+v", got[3])
	}
}

// TestAuditUpgradeKeepsOpenAndFinished: a records bucket made by the
// version before the audit stream (a key-value bucket keeping every record
// the retention) is updated in place: its open bounty stays open and is
// resumed, its finished one is still listed (from the bucket, where it
// stays its retention), and new records get their TTL.
func TestAuditUpgradeKeepsOpenAndFinished(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	q := config.DefaultQueue()
	node, err := queue.Open(ctx, &q, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	old, err := node.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucketRecords, Description: "microengine bounties and their audit trail",
		TTL: config.DefaultRetention, Storage: jetstream.FileStorage, Replicas: 1, History: 1,
	})
	if err != nil {
		node.Close()
		t.Fatal(err)
	}
	openB := testBounty(10, time.Now().Add(time.Hour))
	finished := testBounty(11, time.Now().Add(-time.Hour))
	for _, r := range []Record{
		{Bounty: openB, State: StateOpen, ReceivedAt: time.Now()},
		{Bounty: finished, State: StateAnswered, ReceivedAt: time.Now().Add(-2 * time.Hour), FinishedAt: time.Now().Add(-2 * time.Hour), Answer: &Answer{Verdict: shared.VerdictBenign}},
	} {
		raw, _ := json.Marshal(r)
		if _, err := old.Create(ctx, hexKey(r.Bounty.Key()), raw); err != nil {
			node.Close()
			t.Fatal(err)
		}
	}
	entry, _ := json.Marshal(openEntry{Expiration: openB.Expiration})
	oldOpen, err := node.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucketOpenJS, TTL: maxBountyLifetime + time.Hour, Storage: jetstream.FileStorage,
		Replicas: 1, History: 1, LimitMarkerTTL: openMarkerTTL,
	})
	if err == nil {
		_, err = oldOpen.Create(ctx, hexKey(openB.Key()), entry)
	}
	node.Close()
	if err != nil {
		t.Fatal(err)
	}

	s := openEmbedded(t, dir, config.DefaultRetention)
	defer s.Close()
	info, err := s.node.JS.Stream(ctx, "KV_"+bucketRecords)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := info.CachedInfo().Config; !cfg.AllowMsgTTL || cfg.MaxAge != config.DefaultRetention {
		t.Errorf("records bucket after the upgrade: TTLs allowed %v, MaxAge %s (want the retention, for the records already there)", cfg.AllowMsgTTL, cfg.MaxAge)
	}
	if !s.legacyMayExist(ctx) {
		t.Error("after an upgrade, the finished bounties already in the records bucket are not listed")
	}
	got := listed(t, s)
	if len(got[10]) != 1 || got[10][0].State != StateOpen || len(got[11]) != 1 || got[11][0].State != StateAnswered {
		t.Fatalf("listed after the upgrade: %+v", got)
	}
	var resumed bool
	_ = s.OpenKeysAfter(nil, func(key []byte, _ time.Time) bool {
		resumed = resumed || string(key) == string(openB.Key())
		return true
	})
	if !resumed {
		t.Error("the open bounty is not in the open index after the upgrade")
	}
	if ok, err := s.Finish(ctx, openB.Key(), Outcome{State: StateAnswered, At: time.Now(), Answer: &Answer{Verdict: shared.VerdictMalicious}}); err != nil || !ok {
		t.Fatalf("finish the open bounty: %v, %v", ok, err)
	}
	got = listed(t, s)
	if len(got[10]) != 1 || got[10][0].State != StateAnswered || len(got[11]) != 1 {
		t.Errorf("listed after the finish: %+v", got)
	}
}
