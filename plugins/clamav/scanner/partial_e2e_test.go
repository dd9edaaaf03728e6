//go:build e2e

package scanner

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/shared"
)

// The costly evasions: clamd unpacks 101-120 MiB for each. `make e2e` runs
// them.

func TestManagedClamdNeverBenignOnPartialScanAll(t *testing.T) {
	testManagedClamdNeverBenign(t, evasions())
}

func TestExternalClamdThatSkipsSilentlyAll(t *testing.T) {
	testExternalClamdThatSkipsSilently(t, evasions()[:3])
}

// TestExternalClamdWithDefaultLimits: AlertExceedsMax alone is not enough.
// With clamd's default MaxFileSize (100M, below its MaxScanSize of 400M)
// an archive member over MaxFileSize is skipped without an alert; the
// large-member probe finds that out.
func TestExternalClamdWithDefaultLimits(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{Config: []string{"AlertExceedsMax yes", "MaxFileSize 100M", "MaxScanSize 400M"}})
	s := configuredJSON(t, fmt.Sprintf(`{"address":%q,"timeout":"2m"}`, d.Address()))
	r := slowScan(t, s, file(evasions()[2].content(t)))
	if r.Verdict != shared.VerdictUnknown || !strings.Contains(r.Reason, "MaxFileSize") {
		t.Errorf("padded member: %+v, want unknown naming MaxFileSize", r)
	}
	h, err := s.Health(context.Background())
	if err != nil || h.Healthy || !strings.Contains(h.Message, "member") {
		t.Errorf("Health = %+v, %v; want degraded by the large-member probe", h, err)
	}
}
