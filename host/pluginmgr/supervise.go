package pluginmgr

import (
	"context"
	"errors"
	"fmt"
	"time"

	pluginlaunch "github.com/microengine/microengine/shared/launch"
)

// supervisor is the state of one slot's supervise loop; only the loop
// touches it.
type supervisor struct {
	s *slot
	// streak counts failures in a row (crashes soon after start, failed
	// launches); it sets the backoff, so a plugin that keeps dying is not
	// relaunched in a tight loop.
	streak  int
	retryAt time.Time
	// checked is the process the health failures count against.
	checked  *instance
	failures int
}

// supervise keeps a healthy process behind the slot: it polls for exits,
// checks health on an interval, and relaunches with capped exponential
// backoff.
func (s *slot) supervise() {
	defer close(s.done)
	exitPoll := time.NewTicker(250 * time.Millisecond)
	defer exitPoll.Stop()
	health := time.NewTicker(s.opts.HealthInterval)
	defer health.Stop()
	v := &supervisor{s: s}
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-exitPoll.C:
		case <-health.C:
			v.checkHealth()
		}
		v.reapExited()
		if s.current() != nil || time.Now().Before(v.retryAt) {
			continue
		}
		v.relaunch()
	}
}

// checkHealth asks the current process for its health; two failed checks
// in a row mean it is hung, and it is replaced.
func (v *supervisor) checkHealth() {
	cur := v.s.current()
	if cur == nil {
		return
	}
	if cur != v.checked { // failures count against one process only
		v.checked, v.failures = cur, 0
	}
	if v.s.checkHealth(cur) {
		v.failures = 0
		return
	}
	if v.failures++; v.failures >= 2 {
		v.s.log.Warn("plugin failed two health checks; relaunching", "pid", cur.pid)
		v.down(cur, errors.New("failed two health checks in a row"))
		v.failures = 0
	}
}

// reapExited takes a process that exited on its own out of service.
func (v *supervisor) reapExited() {
	cur := v.s.current()
	if cur == nil || !cur.client.Exited() {
		return
	}
	v.s.metrics.crashes.WithLabelValues(v.s.name).Inc()
	why := fmt.Errorf("process %d exited: %s", cur.pid, cur.exitReport())
	v.s.mu.Lock()
	v.s.crashes++
	v.s.lastCrash = time.Now().UTC().Format(time.RFC3339) + ": " + why.Error()
	v.s.mu.Unlock()
	v.down(cur, why)
}

// down drops a dead or hung process and sets when to relaunch.
func (v *supervisor) down(inst *instance, why error) {
	switch {
	case inst.isolated.Load():
		// A scan retried alone was in flight: that artifact killed the
		// process, not a fault of the plugin's environment, so this crash
		// does not back off relaunches, and neither does the one that sent
		// the artifact to be retried. Otherwise every poison artifact in a
		// long run would stretch the relaunch delay for all the others.
		v.streak = max(v.streak-1, 0)
		v.s.drop(inst, why)
		return
	case time.Since(inst.started) < v.s.opts.StableAfter:
		v.streak++
	default:
		v.streak = 1
	}
	v.s.drop(inst, why)
	if v.streak > 1 {
		v.setRetry(time.Now().Add(backoff(v.streak-1, v.s.opts.BackoffBase, v.s.opts.BackoffMax)))
	}
}

// relaunch starts a new process for the slot.
func (v *supervisor) relaunch() {
	s := v.s
	s.mu.Lock()
	spec := s.spec
	s.mu.Unlock()
	spec.relaunch = true
	ctx, cancel := context.WithTimeout(context.Background(), spec.startTimeout+2*spec.callTimeout+configureTimeout)
	inst, err := launch(ctx, spec, false)
	cancel()
	if err != nil {
		v.streak++
		delay := backoff(v.streak, s.opts.BackoffBase, s.opts.BackoffMax)
		v.setRetry(time.Now().Add(delay))
		s.fail(fmt.Errorf("relaunch failed (next try in %s): %w", delay, err))
		return
	}
	if !s.replaceIf(nil, inst) {
		// A reload swapped a process in while this one started.
		pluginlaunch.KillClient(inst.client, s.opts.KillTimeout, s.log)
		return
	}
	s.mu.Lock()
	s.restarts++
	s.mu.Unlock()
	s.metrics.restarts.WithLabelValues(s.name).Inc()
	s.log.Info("plugin relaunched", "pid", inst.pid, "version", inst.info.Version)
}

// setRetry holds relaunches back until t, and tells waiting scans: they
// wait for a relaunch only within Options.WaitForPlugin meanwhile.
func (v *supervisor) setRetry(t time.Time) {
	v.retryAt = t
	v.s.setBackoff(t)
}

func backoff(attempt int, base, ceiling time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}
