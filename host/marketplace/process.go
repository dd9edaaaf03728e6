package marketplace

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/shared"
)

// process takes one stored bounty to its end: expired, answered or failed.
// When scan is false (the early lane) it answers unknown without a scan.
// Whatever goes wrong is answered unknown, bid 0: never benign.
func (s *Service) process(t task, scan bool, sp *spool) {
	// The claim is released once the outcome is committed (deliver hands
	// that to the store), so no sweep can queue the bounty again meanwhile.
	handedOff := false
	defer func() {
		if !handedOff {
			s.release(t.key)
		}
	}()
	if s.hardCtx.Err() != nil {
		return // the shutdown grace is over: it stays open for the next start
	}
	key := []byte(t.key)
	// The store is the truth: the bounty may have been finished since it
	// was queued (a sweep and a webhook can both queue it).
	rec, ok, err := s.store.Get(key)
	if err != nil {
		s.log.Error("cannot read a stored bounty", "bounty", t.b.ID, "phase", t.b.Phase, "error", err)
		return
	}
	if !ok || rec.State != StateOpen {
		return
	}
	b := rec.Bounty
	log := s.log.With("bounty", b.ID, "phase", b.Phase)
	if !s.now().Before(b.Expiration) {
		log.Warn("bounty expired before it could be processed", "expiration", b.Expiration)
		s.finishExpired(key, "expired before it could be processed")
		return
	}

	var res engine.Result
	switch {
	case rec.Damaged != "":
		log.Warn("the stored bounty is incomplete: answering unknown", "reason", rec.Damaged)
		res = unknownResult("the bounty could not be stored whole (%s)", rec.Damaged)
	case scan:
		res = s.evaluate(log, b, sp)
	default:
		s.metrics.early.Inc()
		res = unknownResult("no scan could finish before the expiration: answered unknown at once")
	}
	if s.hardCtx.Err() != nil {
		log.Info("shutdown: bounty left open for the next start")
		return
	}
	handedOff = s.deliver(log, t.key, rec, res)
}

func unknownResult(format string, args ...any) engine.Result {
	return engine.Result{Verdict: shared.VerdictUnknown, Reason: fmt.Sprintf(format, args...)}
}

// evaluate fetches and scans, within expiration − safety margin.
func (s *Service) evaluate(log hclog.Logger, b Bounty, sp *spool) engine.Result {
	deadline := b.Expiration.Add(-s.cfg.SafetyMargin)
	if !s.now().Before(deadline) {
		s.metrics.early.Inc()
		return unknownResult("not enough time left to scan before the expiration")
	}
	typ, ok := b.Type()
	if !ok {
		return skippedResult(shared.CommentTypeUnsupported, "unsupported artifact type %q", b.ArtifactType)
	}
	fields := b.Fields()
	if ok, why := s.filters.Allowed(fields); !ok {
		log.Info("bounty filtered out: answering unknown", "reason", why)
		return unknownResult("%s", why)
	}

	ctx, cancel := context.WithDeadline(s.hardCtx, deadline)
	defer cancel()
	start := time.Now()
	// Both types are fetched: a url bounty's content (the URL to judge)
	// is behind its artifact_uri too.
	fctx, fcancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
	size, err := s.fetcher.fetchArtifact(fctx, sp, b.ArtifactURI, b.SHA256)
	fcancel()
	defer sp.reset()
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	s.metrics.fetch.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	if err != nil {
		log.Warn("cannot fetch the artifact: answering unknown", "error", err)
		return skippedResult(shared.CommentCannotFetch, "fetch: %v", err)
	}
	var content io.ReaderAt = sp.f
	log.Debug("artifact fetched", "bytes", size, "took", time.Since(start))

	scanStart := time.Now()
	res := s.opts.Scanner.Scan(ctx, engine.Artifact{
		ID: b.IDString(), Type: typ, Size: size, Content: content, Metadata: fields,
	})
	s.observeScan(time.Since(start))
	res = sanitize(ctx, res)
	s.metrics.scan.WithLabelValues(string(res.Verdict)).Observe(time.Since(scanStart).Seconds())
	if res.Verdict == shared.VerdictMalicious || res.Verdict == shared.VerdictBenign {
		res.Confidence = s.filters.Adjust(fields, res.Confidence)
	}
	return res
}

// sanitize enforces the verdict rule on whatever the scanner returned: an
// unrecognised verdict is unknown, and a benign that arrives after the
// deadline cannot be trusted to have examined the whole artifact.
func sanitize(ctx context.Context, res engine.Result) engine.Result {
	switch res.Verdict {
	case shared.VerdictMalicious, shared.VerdictSuspicious, shared.VerdictUnknown:
	case shared.VerdictBenign:
		if ctx.Err() != nil {
			res.Verdict, res.Confidence = shared.VerdictUnknown, 0
			res.Reason = "the scan did not finish before the deadline"
		}
	default:
		res.Reason = fmt.Sprintf("scanner returned an invalid verdict %q", res.Verdict)
		res.Verdict = shared.VerdictUnknown
	}
	if res.Verdict != shared.VerdictMalicious && res.Verdict != shared.VerdictBenign {
		res.Confidence = 0
	}
	res.Confidence = shared.ClampConfidence(res.Confidence)
	return res
}

// answerFor builds what is posted: an assertion with a bid, or a vote.
func (s *Service) answerFor(b Bounty, res engine.Result) *Answer {
	a := &Answer{Verdict: res.Verdict, Metadata: newMetadata(s.opts.Version, b, res)}
	if b.Phase == PhaseAssertion {
		a.Bid = ComputeBid(s.cfg.Bid, b.Rules, res.Verdict, res.Confidence)
	}
	return a
}

// deliver posts the answer until it is accepted or the bounty expires, and
// records the outcome without waiting for the commit: the worker moves on,
// and the claim on the bounty is released by the store once committed.
// It reports whether it handed the claim over.
func (s *Service) deliver(log hclog.Logger, key string, rec Record, res engine.Result) bool {
	b := rec.Bounty
	answer := s.answerFor(b, res)
	body, err := json.Marshal(answer)
	if err != nil { // cannot happen with these types; never post a guess
		log.Error("cannot encode the answer", "error", err)
		return false
	}
	ctx, cancel := context.WithDeadline(s.hardCtx, b.Expiration)
	attempts, err := s.poster.post(ctx, b.ResponseURL, body, func(n int, err error) {
		log.Warn("answer not accepted yet: retrying", "attempt", n, "error", err)
	})
	cancel()
	if err != nil && s.hardCtx.Err() != nil {
		log.Info("shutdown while posting: bounty left open for the next start")
		return false
	}

	out := Outcome{State: StateAnswered, At: s.now(), Answer: answer, Reason: res.Reason, Plugins: res.Plugins, PostAttempts: attempts}
	if err != nil {
		out.State = StateFailed
		out.Reason = joinNonEmpty("; ", res.Reason, err.Error())
	}
	s.store.FinishAsync([]byte(key), out, func(_ bool, ferr error) {
		if ferr != nil {
			// The answer went out. Keeping the claim stops the sweep from
			// scanning and posting it again every second; after a restart
			// it is posted once more at worst.
			log.Error("cannot record the bounty's outcome; it stays claimed until restart", "error", ferr)
			return
		}
		s.release(key)
	})

	bid := ""
	if answer.Bid != nil {
		bid = answer.Bid.String()
	}
	if err != nil {
		s.metrics.failed.WithLabelValues(string(answer.Verdict)).Inc()
		log.Error("could not post the answer before the expiration", "verdict", answer.Verdict, "attempts", attempts, "error", err)
		return true
	}
	took := out.At.Sub(rec.ReceivedAt)
	s.metrics.answered.WithLabelValues(string(answer.Verdict), string(b.Phase)).Inc()
	s.metrics.toAnswer.Observe(took.Seconds())
	args := []any{"verdict", answer.Verdict, "confidence", res.Confidence, "took", took, "attempts", attempts}
	if bid != "" {
		args = append(args, "bid", bid)
	}
	if res.MalwareFamily != "" {
		args = append(args, "family", res.MalwareFamily)
	}
	if res.Reason != "" {
		args = append(args, "reason", res.Reason)
	}
	log.Info("answered", args...)
	return true
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}
