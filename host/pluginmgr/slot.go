package pluginmgr

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/shared"
	pluginlaunch "github.com/microengine/microengine/shared/launch"
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
	bg   *sync.WaitGroup
	gate *gate

	mu        sync.Mutex
	spec      launchSpec
	timeout   time.Duration
	cur       *instance
	ready     chan struct{} // closed, and replaced, whenever cur changes
	restarts  int
	crashes   int
	lastCrash string
	lastErr   string
	lastInfo  shared.Info // kept while down so the engine can still route by type
	swapErr   string
	// backoffUntil is when the supervisor will next try to relaunch a
	// plugin that keeps failing; zero or past when it relaunches at once.
	backoffUntil time.Time
	closed       bool // the plugin was removed or the manager closed

	kick chan struct{} // a scan saw the process die: check now
	stop chan struct{}
	done chan struct{}
}

// slotConfig is what a new slot starts from.
type slotConfig struct {
	name    string
	spec    launchSpec
	timeout time.Duration
	// first is the process that serves from the start; nil starts the slot
	// down, for the supervisor to launch.
	first   *instance
	opts    Options
	metrics *metrics
	bg      *sync.WaitGroup
	log     hclog.Logger
}

func newSlot(c slotConfig) *slot {
	s := &slot{
		name: c.name, log: c.log, metrics: c.metrics, opts: c.opts, bg: c.bg, gate: newGate(),
		spec: c.spec, timeout: c.timeout, cur: c.first, ready: make(chan struct{}),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if c.first != nil {
		s.lastInfo, _ = c.first.snapshot()
	}
	c.metrics.up.WithLabelValues(c.name).Set(boolGauge(c.first != nil))
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

// setBackoff records when the next relaunch will be tried, and wakes
// scans waiting for one so they can bound their wait.
func (s *slot) setBackoff(until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.backoffUntil = until
	close(s.ready)
	s.ready = make(chan struct{})
}

// reconfigure takes a reload's launch spec and timeout for a plugin whose
// process stays: the next relaunch uses them.
func (s *slot) reconfigure(spec launchSpec, timeout time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spec, s.timeout = spec, timeout
}

// needsNewProcess compares the wanted plugin with what the slot runs: the
// binary on disk (by hash), the path, the pin, and the plugin's decoded
// config.
func (s *slot) needsNewProcess(cfg *config.Config, p config.Plugin) bool {
	s.mu.Lock()
	spec, cur := s.spec, s.cur
	s.mu.Unlock()
	if cur == nil || spec.path != p.Path || spec.sha256 != p.SHA256 {
		return true
	}
	sum, err := pluginlaunch.RememberedFileSHA256(p.Path, spec.digestDir)
	if err != nil || sum != cur.sha256 {
		return true
	}
	info, _ := cur.snapshot()
	want, diags := config.DecodePluginBody(p, info.ConfigSchema, cfg.EvalContext())
	return diags.HasErrors() || !bytes.Equal(want, cur.configJSON)
}

func (s *slot) fail(err error) {
	s.mu.Lock()
	s.lastErr = err.Error()
	s.mu.Unlock()
	s.log.Error("plugin is down", "error", err)
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
	pluginlaunch.KillClient(inst.client, s.opts.KillTimeout, s.log)
}

func (s *slot) checkHealth(inst *instance) bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.CallTimeout)
	defer cancel()
	h, err := inst.scanner.Health(ctx)
	if err != nil {
		h = shared.Health{Healthy: false, Message: err.Error()}
	}
	inst.setHealth(h)
	s.metrics.healthy.WithLabelValues(s.name).Set(boolGauge(h.Healthy))
	s.metrics.setBackends(s.name, h.Backends)
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
	s.setSwapErr(nil)
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
	pluginlaunch.KillClient(old.client, s.opts.KillTimeout, s.log)
	s.log.Debug("plugin process stopped", "pid", old.pid)
}

// close stops supervision and the process, letting in-flight scans drain.
func (s *slot) close() {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	s.closed = true // before the wake-up below: waiting scans give up
	s.mu.Unlock()
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

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Identity names what stands behind the plugin's verdicts beyond the
// versions its Info reports: the binary's sha256 and the config its
// process runs with. The verdict cache keys on it, so a rebuilt binary
// that kept its version, or a changed config block, is never answered
// from verdicts the old one gave. "" while the plugin is down.
func (s *slot) Identity() string {
	cur := s.current()
	if cur == nil {
		return ""
	}
	if cur.identity == "" {
		return identityOf(cur.sha256, cur.configJSON)
	}
	return cur.identity
}

// identityOf is an Identity: the binary's sha256 and a digest of the
// config its process runs with.
func identityOf(binarySHA256 string, configJSON []byte) string {
	sum := sha256.Sum256(configJSON)
	return binarySHA256 + ":" + hex.EncodeToString(sum[:16])
}
