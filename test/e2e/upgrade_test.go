//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	market "github.com/microengine/microengine/host/marketplace"
	"github.com/microengine/microengine/host/marketplace/bountiesdb"
	"github.com/microengine/microengine/host/marketplace/bountiesdb/bountiesdbtest"
	"github.com/microengine/microengine/internal/samples"
)

// oldRecord is the bounty b as an engine before JetStream stored it in
// bounties.db, in state.
func oldRecord(t *testing.T, b bounty, state market.State, answer *market.Answer) bountiesdbtest.Record {
	t.Helper()
	body, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := market.ParseBounty(body)
	if err != nil {
		t.Fatal(err)
	}
	r := market.Record{Bounty: mb, State: state, ReceivedAt: time.Now().UTC(), Answer: answer}
	if state != market.StateOpen {
		r.FinishedAt = time.Now().UTC()
	}
	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return bountiesdbtest.Record{Key: mb.Key(), Raw: raw, Open: state == market.StateOpen, Expiration: mb.Expiration, Finished: r.FinishedAt}
}

// TestUpgradeOverBountiesDB: `microengine run` started on the data_dir of
// an engine from before JetStream answers the bounty the old one accepted
// and left unanswered, keeps the one it answered in `microengine
// bounties`, and sets bounties.db aside; restarted, it answers nothing
// twice.
func TestUpgradeOverBountiesDB(t *testing.T) {
	mk := newMarketplace(t)
	dir := eicarEngineDir(t, "info", "")
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		t.Fatal(err)
	}
	open, openKey := mk.newBounty(samples.EICAR(), 30*time.Second)
	done, doneKey := mk.newBounty(samples.EICAR(), 30*time.Second)
	bountiesdbtest.Write(t, filepath.Join(data, bountiesdb.File),
		oldRecord(t, open, market.StateOpen, nil),
		oldRecord(t, done, market.StateAnswered, &market.Answer{Verdict: "malicious"}),
	)

	eng := startEngine(t, dir)
	checkAssertion(t, mk.waitAnswer(openKey, 20*time.Second), "malicious")
	waitFor(t, 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(data, bountiesdb.File+market.MigratedSuffix))
		return err == nil
	})
	if _, err := os.Stat(filepath.Join(data, bountiesdb.File)); err == nil {
		t.Error("bounties.db still in place after the move")
	}
	listed := func() string {
		out, err := exec.Command(bins.host, "bounties", "-json", "-oldest-first", "-config", eng.cfg).Output()
		if err != nil {
			t.Fatalf("microengine bounties: %v\n%s", err, out)
		}
		return string(out)
	}
	// The outcome is recorded just after the answer: ask until it is.
	want := `"state":"answered"`
	waitFor(t, 10*time.Second, func() bool { return strings.Count(listed(), want) == 2 })

	eng.stop()
	eng = startEngine(t, dir)
	if got := strings.Count(listed(), want); got != 2 {
		t.Errorf("after a restart %d bounties listed answered, want 2:\n%s", got, listed())
	}
	if n := len(mk.answersFor(openKey)); n != 1 {
		t.Errorf("the moved open bounty answered %d times, want once", n)
	}
	if n := len(mk.answersFor(doneKey)); n != 0 {
		t.Errorf("the bounty the old engine answered was answered again (%d)", n)
	}
}
