package conformance

import (
	"testing"
)

// Run is the `go test` entry point: it checks cfg.Plugin and runs each
// check as a subtest named by its id, so `go test -run 'Conformance/SCAN'`
// selects checks as the CLI's -run does. A failed MUST check fails its
// subtest; a failed SHOULD check is logged, and fails only with
// cfg.Strict. A skipped check skips its subtest.
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, conformance.Config{Plugin: "../../bin/microengine-plugin-eicar"})
//	}
func Run(t *testing.T, cfg Config) {
	t.Helper()
	r, err := newRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	for _, c := range suite() {
		t.Run(c.ID, func(t *testing.T) {
			res := r.run(t.Context(), c)
			r.report.add(res)
			switch {
			case res.Status == Skip:
				t.Skip(res.Actual)
			case res.Failed(r.cfg.Strict):
				t.Errorf("%s %s: %s\nexpected: %s\ngot: %s", res.ID, res.Level, res.Requirement, res.Expected, res.Actual)
			case res.Status == Fail:
				t.Logf("SHOULD not met: %s\nexpected: %s\ngot: %s", res.Requirement, res.Expected, res.Actual)
			default:
				t.Log(res.Actual)
			}
		})
	}
	t.Logf("conformance of %s: %s", cfg.Plugin, r.report.Summary())
}
