package conformance

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/microengine/microengine/shared"
)

// check is one entry of the suite.
type check struct {
	CheckInfo
	run func(ctx context.Context, e *env) outcome
}

// outcome is what a check concluded.
type outcome struct {
	status Status
	actual string
	// crashQuoted: actual already says how the plugin crashed, so the
	// runner adds no log tail of its own.
	crashQuoted bool
}

func passf(format string, args ...any) outcome {
	return outcome{status: Pass, actual: fmt.Sprintf(format, args...)}
}

func failf(format string, args ...any) outcome {
	return outcome{status: Fail, actual: fmt.Sprintf(format, args...)}
}

// crashedf fails a check that saw the plugin die and says how.
func crashedf(format string, args ...any) outcome {
	return outcome{status: Fail, actual: fmt.Sprintf(format, args...), crashQuoted: true}
}

func skipf(format string, args ...any) outcome {
	return outcome{status: Skip, actual: fmt.Sprintf(format, args...)}
}

// problems collects a check's failures so one run reports all of them.
type problems []string

func (p *problems) add(format string, args ...any) {
	*p = append(*p, fmt.Sprintf(format, args...))
}

func (p problems) outcome(passFormat string, args ...any) outcome {
	if len(p) > 0 {
		return failf("%s", strings.Join(p, "; "))
	}
	return passf(passFormat, args...)
}

// env is what a check sees: the runner, through a few helpers.
type env struct {
	r  *runner
	id string
}

func (e *env) session(ctx context.Context, st stage) (*session, outcome, bool) {
	return e.r.session(ctx, e.id, st)
}

// fileSession is a configured session with a plugin that scans files; the
// checks that stream file content are skipped for a plugin that does not,
// as csi-sanity skips checks for capabilities a driver does not advertise.
func (e *env) fileSession(ctx context.Context) (*session, outcome, bool) {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return nil, out, false
	}
	if !s.pluginInfo.Supports(shared.ArtifactFile) {
		return nil, skipf("the plugin does not scan file artifacts (Info.ArtifactTypes: %v)", s.pluginInfo.ArtifactTypes), false
	}
	return s, outcome{}, true
}

// item is content with the verdict expected of it, when there is one.
type item struct {
	name    string
	content []byte
	want    shared.Verdict
	family  string
}

// samples returns what the plugin vouches for (Info.Samples), what the
// suite's config adds, and a plain text file that every plugin must find
// benign. Samples declared unknown are left out: they vouch for nothing
// (INFO-004 reports them).
func (e *env) samples(s *session) []item {
	var out []item
	add := func(src []shared.Sample) {
		for _, smp := range src {
			if smp.Verdict == shared.VerdictUnknown || smp.Verdict == "" {
				continue
			}
			out = append(out, item{name: smp.Name, content: smp.Content, want: smp.Verdict, family: smp.MalwareFamily})
		}
	}
	add(s.pluginInfo.Samples)
	add(e.r.cfg.Samples)
	add([]shared.Sample{builtinBenign()})
	return out
}

func (e *env) positives(s *session) []item {
	var out []item
	for _, it := range e.samples(s) {
		if it.want == shared.VerdictMalicious {
			out = append(out, it)
		}
	}
	return out
}

func noPositive() outcome {
	return skipf("no malicious sample: the plugin declares none in Info.Samples and Config.Samples adds none")
}

// answer is the outcome of one scan.
type answer struct {
	res shared.Result
	err error
}

func (a answer) String() string {
	if a.err != nil {
		return "error: " + a.err.Error()
	}
	return describe(a.res)
}

// same compares two answers as the marketplace sees them: the verdict,
// and the family of a malicious one.
func (a answer) same(b answer) bool {
	if a.err != nil || b.err != nil {
		return false
	}
	if a.res.Verdict != b.res.Verdict {
		return false
	}
	return a.res.Verdict != shared.VerdictMalicious || a.res.MalwareFamily == b.res.MalwareFamily
}

func describe(r shared.Result) string {
	switch r.Verdict {
	case shared.VerdictMalicious:
		if r.MalwareFamily == "" {
			return "malicious (no family)"
		}
		return fmt.Sprintf("malicious (family %q)", r.MalwareFamily)
	case shared.VerdictUnknown, shared.VerdictSuspicious:
		if r.Reason != "" {
			return fmt.Sprintf("%s (%s)", r.Verdict, r.Reason)
		}
	}
	return string(r.Verdict)
}

// scanBytes scans content as a file artifact through sc (nil: the default
// chunking) under the call timeout.
func (e *env) scanBytes(ctx context.Context, s *session, sc *shared.GRPCClient, what string, content []byte) answer {
	res, err := s.scan(ctx, what, sc, fileArtifact(e.id+"/"+what, content), e.r.cfg.CallTimeout)
	return answer{res, err}
}

// chunkName says how a scanner chunks its stream, for messages.
func chunkName(n int) string {
	switch {
	case n == 0:
		return fmt.Sprintf("default %s", sizeName(shared.DefaultChunkSize))
	default:
		return sizeName(n)
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	case n == 1:
		return "1 byte"
	}
	return fmt.Sprintf("%d bytes", n)
}

// scanner returns the session's scanner with n-byte chunks (0: default).
func (s *session) chunked(n int) *shared.GRPCClient {
	if n == 0 {
		return s.scanner
	}
	return s.scanner.WithChunkSize(n)
}

// elapsedSince rounds for messages.
func elapsedSince(t time.Time) time.Duration {
	return time.Since(t).Round(time.Millisecond)
}
