package marketplace

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/shared"
)

func testBounty(id int64, exp time.Time) Bounty {
	return Bounty{ID: id, ArtifactType: "file", ArtifactURI: "http://x/a", Expiration: exp, ResponseURL: "http://x/r", Phase: PhaseAssertion, Rules: DefaultRules()}
}

// TestStoreKeepsOrderAndPhasesAcrossReopen: after a restart the open
// bounties come back soonest expiration first, a finished one stays
// finished, a redelivery (by delivery id, by another id, by none) is
// recognised by the bounty's id and phase, and another phase of the same
// bounty is a new question.
func TestStoreKeepsOrderAndPhasesAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openEmbedded(t, dir, config.DefaultRetention)
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
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openEmbedded(t, dir, config.DefaultRetention)
	defer s.Close()
	r, ok, err := s.Get(bountyKey(1, PhaseAssertion))
	if err != nil || !ok || r.State != StateAnswered || r.Answer.Bid.String() != "5" {
		t.Fatalf("after reopen: %+v %v %v", r, ok, err)
	}
	var open []int64
	s.OpenKeysAfter(nil, func(key []byte, exp time.Time) bool {
		r, _, _ := s.Get(key)
		open = append(open, r.Bounty.ID)
		return true
	})
	if fmt.Sprint(open) != "[2 0]" {
		t.Errorf("open = %v, want [2 0]", open)
	}
	for _, d := range []string{"d0", "other", ""} {
		if isNew, err := s.Put(ctx, testBounty(0, now.Add(time.Minute)), d, now); err != nil || isNew {
			t.Errorf("redelivery %q: new=%v err=%v", d, isNew, err)
		}
	}
	arbitration := testBounty(0, now.Add(time.Minute))
	arbitration.Phase = PhaseArbitration
	if isNew, err := s.Put(ctx, arbitration, "", now); err != nil || !isNew {
		t.Errorf("the arbitration phase of a bounty is a new question: new=%v err=%v", isNew, err)
	}
}
