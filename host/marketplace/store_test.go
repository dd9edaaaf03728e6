package marketplace

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/microengine/microengine/shared"
)

func testBounty(id int64, exp time.Time) Bounty {
	return Bounty{ID: id, ArtifactType: "file", ArtifactURI: "http://x/a", Expiration: exp, ResponseURL: "http://x/r", Phase: PhaseAssertion, Rules: DefaultRules()}
}

func TestStoreDurableAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), StoreFile)
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range int64(3) {
		if isNew, err := s.Put(ctx, testBounty(i, now.Add(time.Duration(3-i)*time.Minute)), fmt.Sprint("d", i), now); err != nil || !isNew {
			t.Fatalf("put %d: %v %v", i, isNew, err)
		}
	}
	ans := &Answer{Verdict: shared.VerdictMalicious, Bid: wei("5")}
	if done, err := s.Finish(ctx, bountyKey(1, PhaseAssertion), Outcome{State: StateAnswered, At: now, Answer: ans}); !done || err != nil {
		t.Fatalf("finish: %v %v", done, err)
	}
	if done, _ := s.Finish(ctx, bountyKey(1, PhaseAssertion), Outcome{State: StateFailed, At: now}); done {
		t.Error("a finished bounty was finished again")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, testBounty(9, now), "", now); !errors.Is(err, ErrStoreClosed) {
		t.Errorf("put after close: %v", err)
	}

	s, err = OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, ok, err := s.Get(bountyKey(1, PhaseAssertion))
	if err != nil || !ok || r.State != StateAnswered || r.Answer.Bid.String() != "5" {
		t.Fatalf("after reopen: %+v %v %v", r, ok, err)
	}
	// Open bounties come back soonest expiration first.
	var open []int64
	s.OpenKeys(func(key []byte, exp time.Time) bool {
		r, _, _ := s.Get(key)
		open = append(open, r.Bounty.ID)
		return true
	})
	if fmt.Sprint(open) != "[2 0]" {
		t.Errorf("open = %v, want [2 0]", open)
	}
	// Redelivery by delivery id and by id+phase, after the reopen.
	for _, d := range []string{"d0", "other", ""} {
		if isNew, err := s.Put(ctx, testBounty(0, now), d, now); err != nil || isNew {
			t.Errorf("redelivery %q: new=%v err=%v", d, isNew, err)
		}
	}
	if isNew, _ := s.Put(ctx, Bounty{ID: 0, Phase: PhaseArbitration, Expiration: now, Rules: DefaultRules()}, "", now); !isNew {
		t.Error("the arbitration phase of a bounty is a new question")
	}
}

func TestStorePrune(t *testing.T) {
	ctx := context.Background()
	s, err := OpenStore(filepath.Join(t.TempDir(), StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	old := now.Add(-8 * 24 * time.Hour)
	var wg sync.WaitGroup
	for i := range int64(600) { // more than one prune chunk; concurrent, so group-committed
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Put(ctx, testBounty(i, old), fmt.Sprint("d", i), old)
			at := old
			if i%2 == 1 {
				at = now
			}
			s.Finish(ctx, bountyKey(i, PhaseAssertion), Outcome{State: StateAnswered, At: at})
		}()
	}
	wg.Wait()
	s.Put(ctx, testBounty(1000, now.Add(time.Minute)), "open", now)
	n, err := s.Prune(ctx, now.Add(-7*24*time.Hour))
	if err != nil || n != 300 {
		t.Fatalf("pruned %d, %v; want 300", n, err)
	}
	counts, _ := s.Counts()
	if counts[StateAnswered] != 300 || counts[StateOpen] != 1 {
		t.Errorf("counts %v", counts)
	}
	// A pruned bounty's delivery id is forgotten too: the id sets stay bounded.
	if isNew, _ := s.Put(ctx, testBounty(0, now.Add(time.Minute)), "d0", now); !isNew {
		t.Error("pruned delivery id still remembered")
	}
	if isNew, _ := s.Put(ctx, testBounty(1, now), "d1", now); isNew {
		t.Error("kept delivery id forgotten")
	}
}

func TestStoreGroupCommit(t *testing.T) {
	ctx := context.Background()
	s, err := OpenStore(filepath.Join(t.TempDir(), StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for i := range int64(300) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Put(ctx, testBounty(i, time.Now()), "", time.Now()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	counts, _ := s.Counts()
	if counts[StateOpen] != 300 {
		t.Errorf("stored %d", counts[StateOpen])
	}
	commits, writes := s.Commits()
	t.Logf("%d writes in %d commits", writes, commits)
	if commits >= writes {
		t.Errorf("no write shared a commit: %d writes, %d commits", writes, commits)
	}
}

func TestStoreReadOnlyWhileLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), StoreFile)
	if _, err := OpenStoreReadOnly(path, 50*time.Millisecond); err == nil {
		t.Error("opened a store that does not exist")
	}
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStoreReadOnly(path, 50*time.Millisecond); !errors.Is(err, ErrStoreBusy) {
		t.Errorf("read-only open of a held store: %v", err)
	}
	if _, err := OpenStore(path); !errors.Is(err, ErrStoreBusy) {
		t.Errorf("second writer: %v", err)
	}
	s.Close()
	ro, err := OpenStoreReadOnly(path, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Put(context.Background(), testBounty(1, time.Now()), "", time.Now()); err == nil {
		t.Error("wrote through a read-only store")
	}
}
