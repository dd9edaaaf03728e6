package pluginmgr

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/shared"
)

// slot is one configured plugin: a name, the process currently serving it
// (nil while it is down) and the supervisor that keeps one running.
type slot struct {
	name    string
	log     hclog.Logger
	metrics *metrics
	opts    Options
	// bg counts the manager's background work (draining old processes), so
	// the manager's Close can wait for every process to be gone.
	bg *sync.WaitGroup

	mu       sync.Mutex
	spec     launchSpec
	timeout  time.Duration
	cur      *instance
	ready    chan struct{} // closed, and replaced, whenever cur changes
	restarts int
	lastErr  string
	lastInfo shared.Info // kept while down so the engine can still route by type
	swapErr  string

	kick chan struct{} // a scan saw the process die: check now
	stop chan struct{}
	done chan struct{}
}

func newSlot(name string, spec launchSpec, timeout time.Duration, first *instance, opts Options, m *metrics, bg *sync.WaitGroup, log hclog.Logger) *slot {
	s := &slot{
		name: name, log: log, metrics: m, opts: opts, bg: bg,
		spec: spec, timeout: timeout, cur: first, ready: make(chan struct{}),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if first != nil {
		s.lastInfo, _ = first.snapshot()
	}
	m.up.WithLabelValues(name).Set(boolGauge(first != nil))
	go s.supervise()
	return s
}

func (s *slot) Name() string { return s.name }

func (s *slot) Timeout() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.timeout
}

func (s *slot) Info() shared.Info {
	s.mu.Lock()
	cur := s.cur
	last := s.lastInfo
	s.mu.Unlock()
	if cur == nil {
		return last
	}
	info, _ := cur.snapshot()
	return info
}

// Scan runs one scan on the current process. While the plugin is being
// relaunched it waits (within ctx and a short bound) rather than failing at
// once; a plugin that stays down gives an error, which the engine turns
// into unknown — never benign.
func (s *slot) Scan(ctx context.Context, a shared.Artifact) (shared.Result, error) {
	inst, err := s.acquire(ctx)
	if err != nil {
		return shared.Result{}, err
	}
	defer inst.release()
	res, err := inst.scanner.Scan(ctx, a)
	if err != nil && inst.client.Exited() {
		s.poke()
		return shared.Result{}, fmt.Errorf("plugin %s (pid %d) died during the scan: %w", s.name, inst.pid, err)
	}
	return res, err
}

func (s *slot) acquire(ctx context.Context) (*instance, error) {
	wait := time.NewTimer(s.opts.WaitForPlugin)
	defer wait.Stop()
	for {
		s.mu.Lock()
		cur, ready, lastErr := s.cur, s.ready, s.lastErr
		s.mu.Unlock()
		if cur != nil && !cur.client.Exited() && cur.acquire() {
			return cur, nil
		}
		if cur != nil && cur.client.Exited() {
			s.poke()
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("plugin %s is unavailable (%s): %w", s.name, lastErrOr(lastErr), ctx.Err())
		case <-wait.C:
			return nil, fmt.Errorf("plugin %s is unavailable: %s: %w", s.name, lastErrOr(lastErr), shared.ErrPluginUnavailable)
		}
	}
}

func (s *slot) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// setCurrent installs inst (nil: down) and wakes scans waiting for it. It
// returns the instance it replaced.
func (s *slot) setCurrent(inst *instance, spec *launchSpec, timeout time.Duration) *instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.installLocked(inst, spec, timeout)
}

// replaceIf installs next only while want is still current: the supervisor
// (relaunch, drop) and a reload (swap) act on the slot concurrently, and
// neither may replace a process the other just installed.
func (s *slot) replaceIf(want, next *instance) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != want {
		return false
	}
	s.installLocked(next, nil, 0)
	return true
}

func (s *slot) installLocked(inst *instance, spec *launchSpec, timeout time.Duration) *instance {
	old := s.cur
	s.cur = inst
	if inst != nil {
		s.lastInfo, _ = inst.snapshot()
		s.lastErr = ""
	}
	if spec != nil {
		s.spec = *spec
		s.timeout = timeout
	}
	close(s.ready)
	s.ready = make(chan struct{})
	s.metrics.up.WithLabelValues(s.name).Set(boolGauge(inst != nil))
	return old
}

func (s *slot) fail(err error) {
	s.mu.Lock()
	s.lastErr = err.Error()
	s.mu.Unlock()
	s.log.Error("plugin is down", "error", err)
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
	failures := 0 // consecutive failed health checks of checked
	var checked *instance
	// streak counts failures (crashes soon after start, failed launches)
	// in a row; it sets the backoff, so a plugin that keeps dying is not
	// relaunched in a tight loop.
	streak := 0
	var retryAt time.Time
	down := func(inst *instance, why error) {
		if time.Since(inst.started) < s.opts.StableAfter {
			streak++
		} else {
			streak = 1
		}
		s.drop(inst, why)
		if streak > 1 {
			retryAt = time.Now().Add(backoff(streak-1, s.opts.BackoffBase, s.opts.BackoffMax))
		}
	}
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-exitPoll.C:
		case <-health.C:
			if cur := s.current(); cur != nil {
				if cur != checked { // failures count against one process only
					checked, failures = cur, 0
				}
				if s.checkHealth(cur) {
					failures = 0
				} else if failures++; failures >= 2 {
					s.log.Warn("plugin failed two health checks; relaunching", "pid", cur.pid)
					down(cur, errors.New("failed two health checks in a row"))
					failures = 0
				}
			}
		}
		cur := s.current()
		if cur != nil && cur.client.Exited() {
			down(cur, fmt.Errorf("process %d exited", cur.pid))
			cur = nil
		}
		if cur != nil || time.Now().Before(retryAt) {
			continue
		}
		s.mu.Lock()
		spec := s.spec
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), spec.startTimeout+callTimeout)
		inst, err := launch(ctx, spec, false)
		cancel()
		if err != nil {
			streak++
			delay := backoff(streak, s.opts.BackoffBase, s.opts.BackoffMax)
			retryAt = time.Now().Add(delay)
			s.fail(fmt.Errorf("relaunch failed (next try in %s): %w", delay, err))
			continue
		}
		if !s.replaceIf(nil, inst) {
			// A reload swapped a process in while this one started.
			shared.KillClient(inst.client, s.opts.KillTimeout, s.log)
			continue
		}
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
		s.metrics.restarts.WithLabelValues(s.name).Inc()
		s.log.Info("plugin relaunched", "pid", inst.pid, "version", inst.info.Version)
	}
}

func (s *slot) current() *instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// drop takes a dead or hung process out of service and kills it.
func (s *slot) drop(inst *instance, why error) {
	if s.replaceIf(inst, nil) {
		s.fail(why)
	}
	inst.retire()
	shared.KillClient(inst.client, s.opts.KillTimeout, s.log)
}

func (s *slot) checkHealth(inst *instance) bool {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	h, err := inst.scanner.Health(ctx)
	if err != nil {
		h = shared.Health{Healthy: false, Message: err.Error()}
	}
	inst.setHealth(h)
	s.metrics.healthy.WithLabelValues(s.name).Set(boolGauge(h.Healthy))
	if !h.Healthy {
		s.log.Warn("plugin reports unhealthy", "message", h.Message)
	}
	// A plugin whose backend is down still answers (unknown) and should not
	// be restarted for it; only a plugin that cannot answer at all is hung.
	return err == nil
}

// swapTo makes inst serve new scans and retires the old process once its
// in-flight scans finish (or the drain timeout passes).
func (s *slot) swapTo(inst *instance, spec launchSpec, timeout time.Duration) {
	old := s.setCurrent(inst, &spec, timeout)
	s.log.Info("plugin swapped", "pid", inst.pid, "version", inst.info.Version, "sha256", inst.sha256)
	if old != nil {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.retireAfterDrain(old)
		}()
	}
}

func (s *slot) retireAfterDrain(old *instance) {
	select {
	case <-old.retire():
	case <-time.After(s.opts.DrainTimeout):
		s.log.Warn("old plugin process did not drain in time; stopping it", "pid", old.pid)
	}
	shared.KillClient(old.client, s.opts.KillTimeout, s.log)
	s.log.Debug("plugin process stopped", "pid", old.pid)
}

// close stops supervision and the process, letting in-flight scans drain.
func (s *slot) close() {
	close(s.stop)
	<-s.done
	if old := s.setCurrent(nil, nil, 0); old != nil {
		s.retireAfterDrain(old)
	}
}

func (s *slot) setSwapErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.swapErr = ""
		return
	}
	s.swapErr = err.Error()
}

func backoff(attempt int, base, ceiling time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func lastErrOr(s string) string {
	if s == "" {
		return "starting"
	}
	return s
}
