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
// one write, the answer is posted, the outcome recorded, then the webhook
// answered 202. A bounty not acknowledged needs no open entry to be
// resumed after a crash — the marketplace delivers it again, and the
// redelivery finds the record open with its answer committed and posts
// that answer — so a cached answer costs two writes to the records, its
// audit and none to the open bucket (an ordinary bounty costs six, its
// audit included). The bounty is committed before the 202, and a
// redelivery posts the same answer.
//
// The record's write and the answer's POST run at once when this engine
// knows, without a read, that the bounty has no record (a new one, on
// the embedded node: noRecordHere): the answer then reaches the
// marketplace without waiting for the write's fsync, whose own tail
// (1.3-1.6 ms at p99 on this machine's disk) had held the p99 bounty →
// answer at 1.85-2.5 ms. In a cluster another engine may hold the record,
// so the write comes first there, and the answer is committed before its
// first POST, as for every other bounty (answerStoredFirst). What each
// outcome of the two leads to is answerBeside's.
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
	body, err := json.Marshal(answer)
	if err != nil { // cannot happen with these types
		log.Error("cannot encode the answer", "error", err)
		return 0, false
	}
	p, err := st.prepareAnswered(b, delivery, now, answer, res.Reason, res.Plugins)
	if err != nil {
		return 0, false // Put stores it marked damaged
	}
	rec := Record{Bounty: b, State: StateOpen, ReceivedAt: now.UTC(), Answer: answer, Reason: res.Reason, Plugins: res.Plugins}
	ctx, cancel := context.WithTimeout(s.hardCtx, queueWriteTimeout)
	defer cancel()
	// An expiration bounded at the webhook (more than maxBountyLifetime
	// ahead), or assumed for a bounty sent without one (DefaultExpiry
	// from each delivery's arrival), differs between deliveries: such a
	// bounty is not one noRecordHere can judge by its expiration (its
	// record's is earlier than a redelivery's).
	beside := !b.expirationAssumed && b.Expiration.Before(now.Add(maxBountyLifetime)) && st.noRecordHere(b.Key(), b.Expiration)
	if beside {
		// The horizon the record's write will need is saved before the
		// answer is posted: one that cannot be (a full disk, a read-only
		// folder) fails every record's write past it, known now, before
		// an answer the store could not hold.
		if err := st.horizon.note(p.k, b.Expiration); err != nil {
			log.Warn("cannot save the records' horizon: storing the cached bounty before its answer", "error", err)
			beside = false
		}
	}
	if beside {
		code, handled, handedOff = s.answerBeside(ctx, log, p, rec, body)
	} else {
		code, handled, handedOff = s.answerStoredFirst(ctx, log, p, rec, body)
	}
	return code, handled
}

// answerStoredFirst stores the record with its answer, then posts the
// answer: the order wherever another engine may hold the bounty's record
// (a cluster), or this engine's may exist (a redelivery, left to Put).
// handedOff: the claim is answerLater's to release.
func (s *Service) answerStoredFirst(ctx context.Context, log hclog.Logger, p answeredRecord, rec Record, body []byte) (code int, handled, handedOff bool) {
	created, err := s.store.writeAnswered(ctx, p)
	if err != nil || !created {
		if err != nil {
			log.Warn("cannot store the cached bounty with its answer: storing it the ordinary way", "error", err)
		}
		return 0, false, false
	}
	s.metrics.received.WithLabelValues(string(rec.Bounty.Phase)).Inc()
	posted := s.postCached(rec.Bounty, body)
	budget := time.NewTimer(s.inlineBudget)
	defer budget.Stop()
	select {
	case r := <-posted:
		return s.afterStored(ctx, log, rec, r, true, posted)
	case <-budget.C:
		return s.afterStored(ctx, log, rec, postResult{}, false, posted)
	}
}

// answerBeside writes the record with its answer and posts the answer at
// once, for a bounty known to have no record (noRecordHere). The 202
// still waits for the write: the bounty is stored durably before it is
// acknowledged. What each outcome leads to:
//
//   - stored, answer taken within the inline budget: the outcome is
//     recorded, then 202, as answerStoredFirst does.
//   - stored, answer refused or not taken within the budget: indexed open
//     and handed to the background delivery (answerLater), as there.
//   - not stored (the write failed, or a redelivery's Put created the
//     record meanwhile), answer taken: the bounty is answered, and the
//     marketplace has what it asked for. 202, and never the ordinary path,
//     which would answer it a second time; logged as an error and counted
//     (microengine_bounties_answered_unstored_total). The record is
//     written again in the background, the claim held, until the store
//     takes it or the bounty expires, and the outcome recorded on it (or
//     on the record a redelivery's Put made meanwhile), so a redelivery
//     once the claim is let go is acknowledged, not answered again.
//   - not stored, answer refused for good: nothing was answered. The
//     ordinary path stores it (Put) or refuses it with a 503, as when the
//     write fails in answerStoredFirst.
//   - not stored, answer not decided yet: the POST is waited for, up to
//     its own deadline (the expiration), then one of the two above. The
//     only other choices are worse: a 202 now acknowledges a bounty that
//     nothing durable resumes if the POST fails or the engine stops, and
//     the ordinary path now may answer it a second time while the first
//     POST is under way. Waiting holds a webhook only when the store
//     failed and the marketplace is slow at once; a redelivery meanwhile
//     finds the claim held and goes to Put, and the outcome recorded
//     above finishes what Put stored.
//
// The crash window this opens: an engine stopped after the marketplace
// took the answer but before the write was durable sent no 202, so the
// marketplace delivers the bounty again and the restarted engine, finding
// no record, answers it again. answerFor is deterministic for a cached
// result and a bounty (the same verdict, confidence and bid under the
// same configuration), so that second answer is the first one again as
// long as the verdict cache still holds the verdict after the restart; a
// verdict cached after the cache's last save, or a plugin changed
// meanwhile, is scanned again, as any bounty.
func (s *Service) answerBeside(ctx context.Context, log hclog.Logger, p answeredRecord, rec Record, body []byte) (code int, handled, handedOff bool) {
	stored := make(chan error, 1)
	go func() {
		created, err := s.store.writeAnswered(ctx, p)
		if err == nil && !created {
			err = errStoredMeanwhile
		}
		stored <- err
	}()
	posted := s.postCached(rec.Bounty, body)
	budget := time.NewTimer(s.inlineBudget)
	defer budget.Stop()
	var r postResult
	var werr error
	wrote, decided, spent := false, false, false
	for !wrote || !(decided || spent) {
		select {
		case werr = <-stored:
			wrote = true
		case r = <-posted:
			decided = true
		case <-budget.C:
			spent = true
		}
	}
	if werr == nil {
		s.metrics.received.WithLabelValues(string(rec.Bounty.Phase)).Inc()
		return s.afterStored(ctx, log, rec, r, decided, posted)
	}
	if !decided {
		log.Warn("cannot store the cached bounty with its answer while its POST is under way: waiting for the POST", "error", werr)
		r = <-posted
	}
	if r.err != nil {
		log.Warn("cannot store the cached bounty with its answer, and its answer was not taken: storing it the ordinary way",
			"error", werr, "post_error", r.err)
		return 0, false, false
	}
	// Answered: acknowledged, as the marketplace has its answer and
	// nothing is left to do; a 503 would bring a redelivery that, finding
	// no record, answers it again.
	s.metrics.unstored.Inc()
	if errors.Is(werr, errStoredMeanwhile) {
		log.Error("answered from the verdict cache while a redelivery stored the bounty without its answer: acknowledged, its outcome recorded on that record",
			"verdict", rec.Answer.Verdict)
	} else {
		log.Error("answered from the verdict cache, but its record could not be stored: acknowledged all the same (answering its redelivery would answer it twice); storing it in the background",
			"error", werr, "verdict", rec.Answer.Verdict)
	}
	out := Outcome{State: StateAnswered, At: s.now(), Answer: rec.Answer, Reason: rec.Reason, Plugins: rec.Plugins, PostAttempts: r.attempts}
	s.observeAnswered(log, rec, out)
	key := string(rec.Bounty.Key())
	madeMeanwhile := errors.Is(werr, errStoredMeanwhile)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.release(key)
		if !madeMeanwhile {
			// Written again until the store takes it, up to the
			// expiration: a redelivery (a marketplace that missed the
			// late 202) then finds the bounty answered instead of
			// answering it again. The claim is held meanwhile, so a
			// redelivery goes to Put, and the outcome below finishes
			// the record whichever write made it.
			wctx, cancel := context.WithDeadline(s.hardCtx, rec.Bounty.Expiration)
			ok, err := s.retryWrite(wctx, log, "store the bounty answered from the cache", func(ctx context.Context) error {
				_, err := s.store.writeAnswered(ctx, p)
				return err
			})
			cancel()
			if !ok {
				log.Error("gave up storing the bounty answered from the cache: it is missing from the store and the audit trail", "error", err)
				return
			}
		}
		// Finishes the record: the one written above, or the one a
		// redelivery's Put made meanwhile (the claim held until then,
		// so no worker answers it).
		s.recordOutcome(log, key, out)
	}()
	return http.StatusAccepted, true, true
}

// errStoredMeanwhile: the record answerBeside was to create was created
// by another write (a redelivery's Put) after noRecordHere found none.
var errStoredMeanwhile = errors.New("stored meanwhile by its redelivery")

// postCached posts a cached answer on its own goroutine, to the
// expiration whatever the webhook's budget: one cut off at the budget may
// already have reached a slow marketplace, and posting it again made
// duplicate answers (65 in a 180 s run at 200/s with the machine
// stalling). Past the budget the webhook is acknowledged and this same
// POST is followed in the background.
func (s *Service) postCached(b Bounty, body []byte) chan postResult {
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
	return posted
}

// afterStored goes on once the record holds the answer: r is how its
// POST ended (decided) or the budget ran out first. handedOff: the claim
// is answerLater's to release.
func (s *Service) afterStored(ctx context.Context, log hclog.Logger, rec Record, r postResult, decided bool, posted chan postResult) (code int, handled, handedOff bool) {
	key := string(rec.Bounty.Key())
	st := s.store
	if !decided {
		log.Debug("answer from the verdict cache not taken within the webhook's budget: following its POST in the background")
		code, handled = s.answerLater(st, log, key, rec, nil, posted)
		return code, handled, true
	}
	if r.err != nil {
		posted <- r
		code, handled = s.answerLater(st, log, key, rec, nil, posted)
		return code, handled, true
	}
	out := Outcome{State: StateAnswered, At: s.now(), Answer: rec.Answer, Reason: rec.Reason, Plugins: rec.Plugins, PostAttempts: r.attempts}
	s.observeAnswered(log, rec, out)
	if _, err := st.Finish(ctx, []byte(key), out); err != nil {
		log.Warn("cannot record the outcome of an answer from the verdict cache: recording it in the background", "error", err)
		code, handled = s.answerLater(st, log, key, rec, &out, nil)
		return code, handled, true
	}
	return http.StatusAccepted, true, false
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
