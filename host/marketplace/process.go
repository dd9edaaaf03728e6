package marketplace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/shared"
)

// process takes one stored bounty to the point where its answer is
// committed, then hands the posting to deliver, on its own goroutine: a
// worker never waits for a marketplace. When scan is false (the early
// lane, or a bounty the deadline watch took from the queue) it answers
// unknown without a scan. Whatever goes wrong is answered unknown, bid 0:
// never benign.
func (s *Service) process(t task, scan bool, sp *spool) {
	// The claim is released once the outcome is recorded (deliver does
	// it), so no sweep can queue the bounty again meanwhile.
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
		// t.b is empty for a task of the deadline watch: the key names it.
		s.log.Error("cannot read a stored bounty", "key", fmt.Sprintf("%x", key), "error", err)
		return
	}
	if !ok || rec.State != StateOpen {
		return
	}
	b := rec.Bounty
	log := s.log.With("bounty", b.ID, "phase", b.Phase)
	// Engines sharing a cluster take a bounty before working on it, and
	// keep it while they do (renewed, like a consumer's InProgress): no two
	// scan it, and one killed mid-scan lets it go when the claim lapses.
	takes, mine, err := s.store.Take(s.hardCtx, key)
	if err != nil {
		log.Error("cannot take the bounty: left for the next sweep", "error", err)
		return
	}
	if !mine {
		return // another engine is on it, or it was finished meanwhile
	}
	stopRenew := s.keepClaim(log, key)
	defer func() {
		if !handedOff {
			stopRenew()
		}
	}()
	if !s.now().Before(b.Expiration) {
		log.Warn("bounty expired before it could be processed", "expiration", b.Expiration)
		s.finishExpired(key, "expired before it could be processed")
		return
	}
	if rec.Answer != nil {
		// Computed and committed before a crash or a stop: the same answer
		// is posted again, never a new one.
		log.Info("posting the answer committed before the restart", "verdict", rec.Answer.Verdict)
		handedOff = s.handOff(log, t.key, rec, rec.Answer, stopRenew)
		return
	}

	var res engine.Result
	switch {
	case takes > MaxTakes:
		// Taken this often without an answer: its scan keeps killing the
		// engines that take it. It is answered, unscanned.
		log.Error("bounty taken too often without an answer: answering unknown unscanned", "takes", takes)
		res = unknownResult("taken %d times without an answer (the engines processing it stopped): answered unknown without a scan", takes)
	case rec.Damaged != "":
		log.Warn("the stored bounty is incomplete: answering unknown", "reason", rec.Damaged)
		res = unknownResult("the bounty could not be stored whole (%s)", rec.Damaged)
	case scan && s.tooLateToScan(b):
		// Re-checked when the work is taken, not only when it was queued:
		// the queue may have moved slower than predicted.
		s.metrics.early.Inc()
		res = unknownResult("no scan could finish before the expiration: answered unknown at once")
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
	answer := s.answerFor(b, res)
	rec.Reason, rec.Plugins = res.Reason, res.Plugins
	if res.MalwareFamily != "" {
		log = log.With("family", res.MalwareFamily)
	}
	if res.Confidence != 0 {
		log = log.With("confidence", res.Confidence)
	}
	handedOff = s.handOff(log, t.key, rec, answer, stopRenew)
}

// keepClaim renews the claim on key until the returned stop is called.
func (s *Service) keepClaim(log hclog.Logger, key []byte) (stop func()) {
	every := s.store.RenewEvery()
	done := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(s.hardCtx, every)
				if err := s.store.Renew(ctx, key); err != nil {
					log.Warn("cannot renew the claim on the bounty", "error", err)
				}
				cancel()
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// tooLateToScan: the time left before expiration − margin is gone, or is
// less than a recent fetch+scan took.
func (s *Service) tooLateToScan(b Bounty) bool {
	left := b.Expiration.Add(-s.cfg.SafetyMargin).Sub(s.now())
	return left <= 0 || time.Duration(s.scanEWMA.Load()) > left
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

	if res, ok := s.cachedBeforeFetch(b, typ, fields); ok {
		log.Debug("answered from the verdict cache", "sha256", b.SHA256)
		return res
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
		// Checked against the download by fetchArtifact.
		SHA256: b.SHA256,
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

// handOff starts deliver on its own goroutine and reports true: the claim
// is deliver's to release. Only a shutdown already past its grace stops it.
func (s *Service) handOff(log hclog.Logger, key string, rec Record, answer *Answer, stopRenew func()) bool {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.release(key)
		defer stopRenew()
		s.deliver(log, key, rec, answer)
	}()
	return true
}

// Retry bounds for store writes that must not be lost (an answer before
// its first post, an outcome after): a full disk may free up.
const (
	commitMinBackoff = 50 * time.Millisecond
	commitMaxBackoff = 2 * time.Second
)

// deliver commits the answer (unless rec already holds it), posts it until
// it is accepted or the bounty expires, and records the outcome. The
// answer is committed before its first POST, so every retry and every
// restart posts the same answer; a commit that fails is retried while the
// bounty can still be answered, and nothing uncommitted is ever posted.
// A recorded outcome that fails is retried while the engine runs.
func (s *Service) deliver(log hclog.Logger, key string, rec Record, answer *Answer) {
	b := rec.Bounty
	if rec.Answer == nil {
		ctx, cancel := context.WithDeadline(s.hardCtx, b.Expiration)
		finished := false
		committed, err := s.retryWrite(ctx, log, "commit the answer", func(ctx context.Context) error {
			stored, err := s.store.CommitAnswer(ctx, []byte(key), answer, rec.Reason, rec.Plugins)
			if stored != nil {
				answer = stored // committed earlier: that one is the answer
			}
			if errors.Is(err, ErrFinished) {
				finished = true
				return nil
			}
			return err
		})
		cancel()
		if finished {
			return
		}
		if !committed {
			if s.hardCtx.Err() != nil {
				log.Info("shutdown before the answer was committed: bounty left open for the next start")
				return
			}
			log.Error("the answer could not be committed before the expiration: nothing was posted", "error", err)
			s.recordOutcome(log, key, Outcome{State: StateFailed, At: s.now(), Answer: answer,
				Reason: joinNonEmpty("; ", rec.Reason, "the answer could not be committed: "+errString(err)), Plugins: rec.Plugins})
			s.metrics.failed.WithLabelValues(string(answer.Verdict)).Inc()
			return
		}
	}
	body, err := json.Marshal(answer)
	if err != nil { // cannot happen with these types; never post a guess
		log.Error("cannot encode the answer", "error", err)
		return
	}
	ctx, cancel := context.WithDeadline(s.hardCtx, b.Expiration)
	attempts, err := s.poster.post(ctx, b.ResponseURL, body, func(n int, err error) {
		log.Warn("answer not accepted yet: retrying", "attempt", n, "error", err)
	})
	cancel()
	s.settle(log, key, rec, answer, attempts, err)
}

// settle records how the POST of a bounty's committed answer ended.
func (s *Service) settle(log hclog.Logger, key string, rec Record, answer *Answer, attempts int, err error) {
	if err != nil && s.hardCtx.Err() != nil {
		log.Info("shutdown while posting: bounty left open (its answer committed) for the next start")
		return
	}
	out := Outcome{State: StateAnswered, At: s.now(), Answer: answer, Reason: rec.Reason, Plugins: rec.Plugins, PostAttempts: attempts}
	if err != nil {
		out.State = StateFailed
		out.Reason = joinNonEmpty("; ", rec.Reason, err.Error())
		s.metrics.failed.WithLabelValues(string(answer.Verdict)).Inc()
		log.Error("could not post the answer before the expiration", "verdict", answer.Verdict, "attempts", attempts, "error", err)
	} else {
		s.observeAnswered(log, rec, out)
	}
	s.recordOutcome(log, key, out)
}

// recordOutcome finishes the bounty in the store, retrying while the
// engine runs: the claim is held meanwhile, so no sweep scans and posts it
// again. A restart before it succeeds posts the committed answer again.
func (s *Service) recordOutcome(log hclog.Logger, key string, out Outcome) {
	if ok, err := s.retryWrite(s.hardCtx, log, "record the outcome", func(ctx context.Context) error {
		// Asynchronous: an outcome may wait 5 ms to share a commit.
		done := make(chan error, 1)
		s.store.FinishAsync([]byte(key), out, func(_ bool, err error) { done <- err })
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}); !ok {
		log.Error("shutdown before the outcome was recorded: its committed answer is posted again at next start", "error", err)
	}
}

// retryWrite runs write until it succeeds or ctx ends, with backoff, and
// logs the first failure and the recovery.
func (s *Service) retryWrite(ctx context.Context, log hclog.Logger, what string, write func(context.Context) error) (bool, error) {
	backoff := commitMinBackoff
	var last error
	for attempt := 1; ; attempt++ {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := write(wctx)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("store write succeeded after retries", "what", what, "attempts", attempt)
			}
			return true, nil
		}
		last = err
		if attempt == 1 {
			log.Error("cannot "+what+": retrying", "error", err)
		}
		s.metrics.storeRetries.Inc()
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, last
		case <-t.C:
		}
		backoff = min(2*backoff, commitMaxBackoff)
	}
}

func errString(err error) string {
	if err == nil {
		return "no time left"
	}
	return err.Error()
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

// CachedScanner is a Scanner with a verdict cache that can answer a file
// artifact by the sha256 its bounty announces, before it is fetched
// (*engine.Engine with trust_bounty_sha256).
type CachedScanner interface {
	CachedBeforeFetch(a engine.Artifact) (engine.Result, bool)
}

// cachedBeforeFetch answers a file bounty from the verdict cache without
// fetching its artifact, when the scanner has a cache that trusts the
// announced sha256 and holds it.
func (s *Service) cachedBeforeFetch(b Bounty, typ shared.ArtifactType, fields map[string]string) (engine.Result, bool) {
	cs, ok := s.opts.Scanner.(CachedScanner)
	if !ok || typ != shared.ArtifactFile || b.SHA256 == "" {
		return engine.Result{}, false
	}
	res, ok := cs.CachedBeforeFetch(engine.Artifact{ID: b.IDString(), Type: typ, Size: -1, Metadata: fields, SHA256: b.SHA256})
	if !ok {
		return engine.Result{}, false
	}
	res.Confidence = s.filters.Adjust(fields, res.Confidence)
	return res, true
}
