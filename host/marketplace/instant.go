package marketplace

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/shared"
)

// inlinePostBudget bounds the POST of a cached bounty's answer made while
// its webhook waits (answerCached). A marketplace that takes longer gets
// the answer from the background delivery instead, which retries until
// the expiration; the webhook is then acknowledged at once. The
// marketplace expects its 202 at once: a healthy one takes a cached
// answer in milliseconds, so a quarter second is room for a busy one
// while a stalled one delays a webhook's 202 by no more than that.
const inlinePostBudget = 250 * time.Millisecond

// answerCached answers a new bounty whose artifact's verdict the cache
// holds (by the sha256 the bounty announces, with trust_bounty_sha256)
// from its webhook's goroutine, before acknowledging it: no queue, no
// worker, no fetch. Its record is stored with the answer committed, in
// one write, then the answer is posted, then the outcome recorded, then
// the webhook answered 202. A bounty not acknowledged needs no open entry
// to be resumed after a crash — the marketplace delivers it again, and
// the redelivery finds the record open with its answer committed and
// posts that answer — so a cached answer costs two writes to the records,
// its audit and none to the open bucket (an ordinary bounty costs six,
// its audit included). Every
// promise holds: the bounty is committed before the 202, the answer
// before its first POST, and a redelivery posts the same answer.
//
// handled is false when the bounty is not one for the cache (or is a
// redelivery): the caller stores it the ordinary way. When it is true,
// code is the webhook's status: 202, or 503 when the bounty could not be
// made safe to acknowledge (the marketplace retries).
func (s *Service) answerCached(b Bounty, delivery string, now time.Time) (code int, handled bool) {
	st := s.store
	if !s.opts.Role.works() || s.draining() {
		return 0, false
	}
	typ, ok := b.Type()
	if !ok || typ != shared.ArtifactFile {
		return 0, false
	}
	if !now.Before(b.Expiration.Add(-s.cfg.SafetyMargin)) {
		return 0, false // the early lane answers it unknown
	}
	fields := b.Fields()
	if ok, _ := s.filters.Allowed(fields); !ok {
		return 0, false
	}
	res, ok := s.cachedBeforeFetch(b, typ, fields)
	if !ok {
		return 0, false
	}
	key := string(b.Key())
	c := s.claim(key, b.Expiration)
	if c == nil {
		return 0, false // being processed: a redelivery
	}
	c.take() // this goroutine is its worker: the deadline watch leaves it
	handedOff := false
	defer func() {
		if !handedOff {
			s.release(key)
		}
	}()
	log := s.log.With("bounty", b.ID, "phase", b.Phase)
	answer := s.answerFor(b, res)
	ctx, cancel := context.WithTimeout(s.hardCtx, queueWriteTimeout)
	defer cancel()
	created, err := st.putAnswered(ctx, b, delivery, now, answer, res.Reason, res.Plugins)
	if err != nil || !created {
		if err != nil && !errors.Is(err, errNotStorable) {
			log.Warn("cannot store the cached bounty with its answer: storing it the ordinary way", "error", err)
		}
		return 0, false
	}
	s.metrics.received.WithLabelValues(string(b.Phase)).Inc()
	rec := Record{Bounty: b, State: StateOpen, ReceivedAt: now.UTC(), Answer: answer, Reason: res.Reason, Plugins: res.Plugins}
	body, err := json.Marshal(answer)
	if err != nil { // cannot happen with these types
		log.Error("cannot encode the answer", "error", err)
		handedOff = true // answerLater releases it
		return s.answerLater(st, log, key, rec, nil, nil)
	}
	// The POST runs to the expiration whatever the webhook's budget: one
	// cut off at the budget may already have reached a slow marketplace,
	// and posting it again made duplicate answers (65 in a 180 s run at
	// 200/s with the machine stalling). Past the budget the webhook is
	// acknowledged and this same POST is followed in the background.
	posted := make(chan postResult, 1)
	pctx, pcancel := context.WithDeadline(s.hardCtx, b.Expiration)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer pcancel()
		var r postResult
		r.attempts, r.err = s.poster.post(pctx, b.ResponseURL, body, nil)
		posted <- r
	}()
	budget := time.NewTimer(s.inlineBudget)
	defer budget.Stop()
	var r postResult
	select {
	case r = <-posted:
	case <-budget.C:
		log.Debug("answer from the verdict cache not taken within the webhook's budget: following its POST in the background")
		handedOff = true // answerLater releases it
		return s.answerLater(st, log, key, rec, nil, posted)
	}
	if r.err != nil {
		handedOff = true // answerLater releases it
		posted <- r
		return s.answerLater(st, log, key, rec, nil, posted)
	}
	out := Outcome{State: StateAnswered, At: s.now(), Answer: answer, Reason: res.Reason, Plugins: res.Plugins, PostAttempts: r.attempts}
	s.observeAnswered(log, rec, out)
	if _, err := st.Finish(ctx, []byte(key), out); err != nil {
		log.Warn("cannot record the outcome of an answer from the verdict cache: recording it in the background", "error", err)
		handedOff = true // answerLater releases it
		return s.answerLater(st, log, key, rec, &out, nil)
	}
	return http.StatusAccepted, true
}

// queueWriteTimeout bounds the store writes made while a webhook waits.
const queueWriteTimeout = 10 * time.Second

// postResult is how a POST of an answer ended.
type postResult struct {
	attempts int
	err      error
}

// answerLater makes a cached bounty whose answer is not posted yet (its
// POST still under way: posting; or not made) or whose outcome could not
// be recorded (out) safe to acknowledge: it is indexed open, so a crash
// after the 202 resumes it, and handed to the background delivery. 503
// when it cannot be indexed: the marketplace's redelivery then finds it
// open with its answer committed.
func (s *Service) answerLater(st *JetStore, log hclog.Logger, key string, rec Record, out *Outcome, posting <-chan postResult) (int, bool) {
	ctx, cancel := context.WithTimeout(s.hardCtx, queueWriteTimeout)
	_, err := st.indexOpen(ctx, hexKey([]byte(key)), rec.Bounty.Expiration, s.now())
	cancel()
	if err != nil {
		log.Error("cannot index the bounty answered from the cache: refusing it so the marketplace retries", "error", err)
		s.release(key)
		return http.StatusServiceUnavailable, true
	}
	stopRenew := s.keepClaim(log, []byte(key))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.release(key)
		defer stopRenew()
		switch {
		case out != nil:
			s.recordOutcome(log, key, *out) // posted already
		case posting != nil:
			r := <-posting
			s.settle(log, key, rec, rec.Answer, r.attempts, r.err)
		default:
			s.deliver(log, key, rec, rec.Answer)
		}
	}()
	return http.StatusAccepted, true
}

// observeAnswered counts and logs an answer the marketplace accepted.
func (s *Service) observeAnswered(log hclog.Logger, rec Record, out Outcome) {
	b, answer := rec.Bounty, out.Answer
	took := out.At.Sub(rec.ReceivedAt)
	s.metrics.answered.WithLabelValues(string(answer.Verdict), string(b.Phase)).Inc()
	s.metrics.toAnswer.Observe(took.Seconds())
	args := []any{"verdict", answer.Verdict, "took", took, "attempts", out.PostAttempts}
	if answer.Bid != nil {
		args = append(args, "bid", answer.Bid.String())
	}
	if rec.Reason != "" {
		args = append(args, "reason", rec.Reason)
	}
	log.Info("answered", args...)
}

func (s *Service) draining() bool {
	select {
	case <-s.drain:
		return true
	default:
		return false
	}
}
