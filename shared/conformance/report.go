package conformance

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/microengine/microengine/shared"
)

// Level is how strong a requirement is, in the RFC 2119 sense.
type Level string

const (
	// MUST: a plugin that fails it is not conformant (the CLI exits 1).
	MUST Level = "MUST"
	// SHOULD: reported, but only fatal with Config.Strict.
	SHOULD Level = "SHOULD"
)

// Status is the outcome of one check.
type Status string

const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// CheckInfo describes one check of the suite.
type CheckInfo struct {
	ID    string `json:"id"`
	Level Level  `json:"level"`
	// Requirement is the rule of the contract the check enforces.
	Requirement string `json:"requirement"`
	// Expected is what the suite expects to observe.
	Expected string `json:"expected"`
}

// CheckResult is the outcome of one check.
type CheckResult struct {
	CheckInfo
	Status Status `json:"status"`
	// Actual says what happened (on PASS too, briefly), or why the check
	// was skipped.
	Actual   string        `json:"actual"`
	Duration time.Duration `json:"duration_ns"`
}

// Failed reports whether the result counts against conformance: a MUST
// that failed, or any failure when strict.
func (r CheckResult) Failed(strict bool) bool {
	return r.Status == Fail && (r.Level == MUST || strict)
}

// PluginSummary is what the suite learnt about the plugin.
type PluginSummary struct {
	Path          string                `json:"path"`
	SHA256        string                `json:"sha256,omitempty"`
	Name          string                `json:"name,omitempty"`
	Version       string                `json:"version,omitempty"`
	Vendor        string                `json:"vendor,omitempty"`
	VendorVersion string                `json:"vendor_version,omitempty"`
	ArtifactTypes []shared.ArtifactType `json:"artifact_types,omitempty"`
	HasBackend    bool                  `json:"has_backend"`
}

// Report is the outcome of a run of the suite.
type Report struct {
	Plugin   PluginSummary `json:"plugin"`
	Results  []CheckResult `json:"results"`
	Passed   int           `json:"passed"`
	Failed   int           `json:"failed"`
	Skipped  int           `json:"skipped"`
	Strict   bool          `json:"strict"`
	Duration time.Duration `json:"duration_ns"`
	// OK is true when every MUST check that ran passed (and, when strict,
	// every SHOULD check too).
	// OK is false too when the run was interrupted: what did not run
	// did not pass.
	OK bool `json:"ok"`
	// Interrupted is true when the run's context ended before every
	// selected check ran to its end; NotRun lists those checks (the one
	// running at the time, then every one after it), in suite order.
	Interrupted bool     `json:"interrupted"`
	NotRun      []string `json:"not_run,omitempty"`
}

// Result returns the result of the check id, if it ran.
func (r Report) Result(id string) (CheckResult, bool) {
	for _, c := range r.Results {
		if c.ID == id {
			return c, true
		}
	}
	return CheckResult{}, false
}

func (r *Report) add(c CheckResult) {
	r.Results = append(r.Results, c)
	switch c.Status {
	case Pass:
		r.Passed++
	case Fail:
		r.Failed++
		if c.Failed(r.Strict) {
			r.OK = false
		}
	case Skip:
		r.Skipped++
	}
}

// interrupted records that check id did not run, or did not run to its
// end, because the run was cancelled.
func (r *Report) interrupted(id string) {
	r.Interrupted, r.OK = true, false
	r.NotRun = append(r.NotRun, id)
}

// Summary is the one-line tally: "N passed, N failed, N skipped".
func (r Report) Summary() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped", r.Passed, r.Failed, r.Skipped)
}

// Line formats one result on one line: status, id, level, then what was
// expected and what happened.
func (c CheckResult) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-4s %-13s %-6s %s", c.Status, c.ID, c.Level, c.Requirement)
	switch c.Status {
	case Fail:
		fmt.Fprintf(&b, ": expected %s; got %s", c.Expected, oneLine(c.Actual))
	case Skip:
		fmt.Fprintf(&b, ": skipped: %s", oneLine(c.Actual))
	default:
		if c.Actual != "" {
			fmt.Fprintf(&b, ": %s", oneLine(c.Actual))
		}
	}
	fmt.Fprintf(&b, " (%s)", c.Duration.Round(time.Millisecond))
	return b.String()
}

// WriteText prints the report as the CLI does: one line per check, then
// the summary.
func (r Report) WriteText(w io.Writer) error {
	for _, c := range r.Results {
		if _, err := fmt.Fprintln(w, c.Line()); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	_, err := fmt.Fprintln(w, r.Summary())
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// oneLine folds multi-line messages (go-plugin's errors have several) so
// each check stays on one line of output.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r\n", "\n")
	parts := strings.Split(s, "\n")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, " | ")
}
