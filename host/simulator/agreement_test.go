package simulator

import (
	"testing"

	"github.com/microengine/microengine/shared"
)

// TestAgreeListsAMissOnce: a sample sent again and missed again is one
// entry of Misses, not up to maxMisses copies of it.
func TestAgreeListsAMissOnce(t *testing.T) {
	tally := map[string]*PluginAgreement{}
	s := &Sample{Name: "missed", Expected: shared.VerdictMalicious}
	for range 3 {
		agree(tally, s, map[string]shared.Verdict{"bravo": shared.VerdictBenign})
	}
	b := tally["bravo"]
	if b.Asked != 3 || b.Disagree != 3 || len(b.Misses) != 1 || b.Misses[0] != "missed (benign, want malicious)" {
		t.Errorf("bravo %+v", b)
	}
}
