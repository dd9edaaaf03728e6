package marketplace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// janitorInterval is how often stored open bounties are looked at: expired
// ones are recorded, ones that found no room in the queues are retried.
const janitorInterval = time.Second

// wakeInterval bounds how often bounties stored by other engines trigger a
// sweep before the janitor's tick.
const wakeInterval = 50 * time.Millisecond

// dispatch routes a stored bounty to a worker. A bounty that cannot be
// scanned before its expiration (its share of the queue ahead would take
// longer than the time left) goes to the early lane and is answered unknown
// at once: an unknown answer beats none. When both are full the bounty
// stays open in the store and the janitor's next sweep retries it. While
// it waits in a queue, the deadline watch may take it and answer unknown.
func (s *Service) dispatch(t task) {
	c := s.claim(t.key, t.b.Expiration)
	if c == nil {
		return // already queued or being processed
	}
	t.c = c
	if s.cannotFinish(t.b) {
		select {
		case s.quick <- t:
			return
		default:
		}
	}
	select {
	case s.queue <- t:
		return
	default:
	}
	select {
	case s.quick <- t:
		return
	default:
	}
	if c.take() { // else the deadline watch took it meanwhile: it is answered
		s.release(t.key)
		s.log.Warn("queues are full: the bounty waits in the store", "bounty", t.b.ID, "phase", t.b.Phase)
	}
}

// claim is a bounty queued or being processed. Whoever moves it from
// queued to taken does the work: a worker, or the deadline watch.
type claim struct {
	expiration time.Time
	taken      atomic.Bool
}

func (c *claim) take() bool { return c.taken.CompareAndSwap(false, true) }

// watchInterval is how often the deadline watch looks at queued bounties.
const watchInterval = 250 * time.Millisecond

// watchDeadlines answers unknown, without a scan, every queued bounty that
// no worker took while there was still time to scan it: workers held by
// slow downloads or scans then cost the bounties behind them their
// verdicts, never their answers.
func (s *Service) watchDeadlines() {
	defer s.wg.Done()
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.drain:
			return
		case <-tick.C:
		}
		// Taken once the scan deadline is at most two ticks away: the
		// safety margin is left to post the answer.
		cutoff := s.now().Add(s.cfg.SafetyMargin + 2*watchInterval)
		var late []task
		s.inflightMu.Lock()
		for key, c := range s.inflight {
			if c.expiration.Before(cutoff) && !c.taken.Load() && c.take() {
				late = append(late, task{key: key, c: c})
			}
		}
		s.inflightMu.Unlock()
		for _, t := range late {
			s.log.Warn("no worker took the bounty in time: answering unknown", "key", fmt.Sprintf("%x", t.key))
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.process(t, false, nil)
			}()
		}
	}
}

// cannotFinish predicts from recent scan times whether the queue ahead
// plus a scan fit before the expiration less the safety margin.
func (s *Service) cannotFinish(b Bounty) bool {
	left := b.Expiration.Add(-s.cfg.SafetyMargin).Sub(s.now())
	if left <= 0 {
		return true
	}
	per := time.Duration(s.scanEWMA.Load())
	if per <= 0 {
		return false
	}
	rounds := len(s.queue)/s.cfg.Workers + 1
	return per*time.Duration(rounds) > left
}

// observeScan folds a fetch+scan duration into the moving average.
func (s *Service) observeScan(d time.Duration) {
	for {
		old := s.scanEWMA.Load()
		next := int64(d)
		if old > 0 {
			next = old + (int64(d)-old)/5
		}
		if s.scanEWMA.CompareAndSwap(old, next) {
			return
		}
	}
}

// claim registers a bounty as queued; nil when it already is (or is being
// processed).
func (s *Service) claim(key string, expiration time.Time) *claim {
	s.inflightMu.Lock()
	defer s.inflightMu.Unlock()
	if _, ok := s.inflight[key]; ok {
		return nil
	}
	c := &claim{expiration: expiration}
	s.inflight[key] = c
	return c
}

func (s *Service) release(key string) {
	s.inflightMu.Lock()
	delete(s.inflight, key)
	s.inflightMu.Unlock()
}

func (s *Service) isInflight(key string) bool {
	s.inflightMu.Lock()
	defer s.inflightMu.Unlock()
	_, ok := s.inflight[key]
	return ok
}

// worker takes tasks until shutdown, then finishes what is queued (each
// bounty is still only worked on while its expiration allows) and returns.
// scan is false for the early lane, which answers unknown without a scan.
func (s *Service) worker(q chan task, scan bool) {
	defer s.wg.Done()
	sp := &spool{dir: s.fetcher.tmpDir}
	defer sp.close()
	work := func(t task) {
		if t.c != nil && !t.c.take() {
			return // the deadline watch answered it meanwhile
		}
		s.process(t, scan, sp)
	}
	for {
		select {
		case t := <-q:
			work(t)
		case <-s.drain:
			for {
				select {
				case t := <-q:
					work(t)
				default:
					return
				}
			}
		}
	}
}

// janitor resumes open bounties (at start: everything a crash or a stop
// left), records the ones that expired and retries the ones the queues had
// no room for. Nothing needs pruning: JetStream drops each record after
// its bounty's expiration and grace (its TTL), and the audit stream's
// outcomes after the retention (its MaxAge).
func (s *Service) janitor() {
	defer s.wg.Done()
	s.sweep(true)
	tick := time.NewTicker(janitorInterval)
	defer tick.Stop()
	lastSweep := time.Now()
	wake := s.store.Wake()
	for {
		select {
		case <-s.drain:
			return
		case <-wake:
			// Another engine stored a bounty: swept now, at most every
			// wakeInterval, rather than at the next tick.
			if d := wakeInterval - time.Since(lastSweep); d > 0 {
				pause := time.NewTimer(d)
				select {
				case <-s.drain:
					pause.Stop()
					return
				case <-pause.C:
				}
			}
			s.sweep(false)
			lastSweep = time.Now()
		case <-tick.C:
			s.sweep(false)
			lastSweep = time.Now()
		}
	}
}

// defaultSweepBatch bounds what one sweep takes in hand.
const defaultSweepBatch = 1024

// sweep looks at up to s.sweepBatch open bounties, soonest expiration first,
// starting where the previous sweep stopped and wrapping around: bounties
// that cannot make progress (their queue is full, their record is being
// repaired) never fill every batch and starve the ones behind them.
func (s *Service) sweep(resume bool) {
	now := s.now()
	var expired, waiting [][]byte
	after := s.sweepFrom
	var last []byte
	visit := func(key []byte, exp time.Time) bool {
		if s.isInflight(string(key)) {
			return true
		}
		k := append([]byte(nil), key...)
		if !now.Before(exp) {
			expired = append(expired, k)
		} else {
			waiting = append(waiting, k)
		}
		last = indexKey(exp, key)
		return len(expired)+len(waiting) < s.sweepBatch
	}
	err := s.store.OpenKeysAfter(after, visit)
	if err == nil && after != nil && len(expired)+len(waiting) < s.sweepBatch {
		// Wrap around to the start of the index.
		err = s.store.OpenKeysAfter(nil, func(key []byte, exp time.Time) bool {
			if bytes.Compare(indexKey(exp, key), after) > 0 {
				return false
			}
			return visit(key, exp)
		})
	}
	if err != nil {
		s.log.Error("cannot read open bounties", "error", err)
		return
	}
	if len(expired)+len(waiting) < s.sweepBatch {
		s.sweepFrom = nil // everything was seen: start from the soonest next time
	} else {
		s.sweepFrom = last
	}
	if resume && len(expired)+len(waiting) > 0 {
		s.log.Info("resuming stored bounties", "open", len(waiting), "expired_meanwhile", len(expired))
	}
	for _, key := range expired {
		s.finishExpired(key, "expired before it could be processed")
	}
	for _, key := range waiting {
		r, ok, err := s.store.Get(key)
		if errors.Is(err, errUndecodable) {
			s.finishUnreadable(key, err)
			continue
		}
		if err != nil {
			// A store out of reach (a JetStream leader election) is no
			// reason to fail an open bounty: the next sweep tries again.
			s.log.Error("cannot read a stored bounty: retried at the next sweep", "key", fmt.Sprintf("%x", key), "error", err)
			continue
		}
		if !ok || r.State != StateOpen {
			continue
		}
		s.dispatch(task{key: string(key), b: r.Bounty})
	}
}

// finishUnreadable ends a bounty whose record cannot be read at all (so
// there is no response_url to answer): it is recorded failed instead of
// being retried every sweep.
func (s *Service) finishUnreadable(key []byte, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.log.Error("a stored bounty cannot be read: recording it failed", "key", fmt.Sprintf("%x", key), "error", cause)
	if _, err := s.store.Finish(ctx, key, Outcome{State: StateFailed, At: s.now(), Reason: "the stored record cannot be read: " + cause.Error()}); err != nil {
		s.log.Error("cannot record an unreadable bounty", "error", err)
	}
}

func (s *Service) finishExpired(key []byte, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done, err := s.store.Finish(ctx, key, Outcome{State: StateExpired, At: s.now(), Reason: reason})
	if err != nil {
		s.log.Error("cannot record an expired bounty", "error", err)
		return
	}
	if done {
		s.metrics.expired.Inc()
	}
}
