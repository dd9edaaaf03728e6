// Package pluginmgr launches the scanner plugins named in engine.hcl, keeps
// each one running (health checks, relaunch with backoff) and swaps a
// plugin's process for a new one without losing a scan.
package pluginmgr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/shared"
)

// Options tune supervision. Zero values take the defaults.
type Options struct {
	HealthInterval time.Duration // default 10s (engine.health_interval)
	DrainTimeout   time.Duration // default 60s (engine.drain_timeout)
	KillTimeout    time.Duration // default 5s
	BackoffBase    time.Duration // default 250ms
	BackoffMax     time.Duration // default 30s
	// StableAfter is how long a process must live for its crash not to
	// count towards the backoff streak. Default 30s.
	StableAfter time.Duration
	// WaitForPlugin is how long a scan waits for a plugin being relaunched
	// before it gives up (unknown). Default 5s.
	WaitForPlugin time.Duration
	StartTimeout  time.Duration // default shared.DefaultStartTimeout
}

func (o Options) withDefaults(cfg *config.Config) Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.HealthInterval, cfg.Engine.HealthInterval)
	def(&o.HealthInterval, 10*time.Second)
	def(&o.DrainTimeout, cfg.Engine.DrainTimeout)
	def(&o.DrainTimeout, 60*time.Second)
	def(&o.KillTimeout, defaultKillTimeout)
	def(&o.BackoffBase, 250*time.Millisecond)
	def(&o.BackoffMax, 30*time.Second)
	def(&o.StableAfter, 30*time.Second)
	def(&o.WaitForPlugin, 5*time.Second)
	def(&o.StartTimeout, shared.DefaultStartTimeout)
	return o
}

// Manager owns the plugin processes. It implements engine.Plugins.
type Manager struct {
	log     hclog.Logger
	opts    Options
	metrics *metrics

	reloadMu sync.Mutex // one reload at a time

	// bg tracks old processes draining after a swap or removal; Close
	// waits for them.
	bg sync.WaitGroup

	mu     sync.RWMutex
	cfg    *config.Config
	slots  map[string]*slot
	order  []string
	closed bool
}

var _ engine.Plugins = (*Manager)(nil)

// New launches every enabled plugin of cfg. Config faults (the host's or a
// plugin's own) come back as diagnostics with file:line; a plugin that
// cannot start at all is an error diagnostic on its block.
func New(ctx context.Context, cfg *config.Config, logger hclog.Logger, opts Options) (*Manager, hcl.Diagnostics) {
	m := &Manager{
		log: logger, opts: opts.withDefaults(cfg), metrics: newMetrics(),
		cfg: cfg, slots: map[string]*slot{},
	}
	results := m.launchAll(ctx, cfg, enabled(cfg), false)
	var diags hcl.Diagnostics
	for _, r := range results {
		diags = append(diags, r.diags()...)
	}
	if diags.HasErrors() {
		m.killLaunched(results)
		return nil, diags
	}
	for _, r := range results {
		m.slots[r.plugin.Name] = newSlot(r.plugin.Name, r.spec, r.plugin.Timeout, r.inst, m.opts, m.metrics, &m.bg, m.pluginLog(r.plugin.Name))
		m.order = append(m.order, r.plugin.Name)
	}
	return m, diags // warnings only
}

func enabled(cfg *config.Config) []config.Plugin {
	var out []config.Plugin
	for _, p := range cfg.Plugins {
		if p.Enabled {
			out = append(out, p)
		}
	}
	return out
}

func (m *Manager) pluginLog(name string) hclog.Logger { return m.log.Named(name) }

type launchResult struct {
	plugin config.Plugin
	spec   launchSpec
	inst   *instance
	err    error
}

func (r launchResult) diags() hcl.Diagnostics {
	if r.err == nil {
		return nil
	}
	var ce *ConfigError
	if errors.As(r.err, &ce) {
		return ce.Diags
	}
	return hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("plugin %q cannot start", r.plugin.Name),
		Detail:   r.err.Error(),
		Subject:  r.plugin.DefRange.Ptr(),
	}}
}

func (m *Manager) spec(cfg *config.Config, p config.Plugin) launchSpec {
	return launchSpec{
		name: p.Name, path: p.Path, sha256: p.SHA256,
		startTimeout: m.opts.StartTimeout,
		logger:       m.pluginLog(p.Name),
		decodeConfig: func(schema []shared.ConfigField) ([]byte, hcl.Diagnostics) {
			return config.DecodePluginBody(p, schema, cfg.EvalContext())
		},
		fieldDiags: func(ce *shared.ConfigError) hcl.Diagnostics {
			return config.PluginFieldDiagnostics(p, ce)
		},
	}
}

// launchAll starts the given plugins at once (each takes ~50 ms; no reason
// to wait for them in turn).
func (m *Manager) launchAll(ctx context.Context, cfg *config.Config, plugins []config.Plugin, requireHealthy bool) []launchResult {
	results := make([]launchResult, len(plugins))
	var wg sync.WaitGroup
	for i, p := range plugins {
		results[i] = launchResult{plugin: p, spec: m.spec(cfg, p)}
		wg.Add(1)
		go func(r *launchResult) {
			defer wg.Done()
			r.inst, r.err = launch(ctx, r.spec, requireHealthy)
		}(&results[i])
	}
	wg.Wait()
	return results
}

// killLaunched stops the processes of a launch that is being refused.
func (m *Manager) killLaunched(results []launchResult) {
	for _, r := range results {
		if r.inst != nil {
			shared.KillClient(r.inst.client, m.opts.KillTimeout, m.log)
		}
	}
}

// Plugins lists the enabled plugins in config order.
func (m *Manager) Plugins() []engine.Plugin {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]engine.Plugin, 0, len(m.order))
	for _, n := range m.order {
		out = append(out, m.slots[n])
	}
	return out
}

// Healthy reports whether at least one plugin is up and healthy.
func (m *Manager) Healthy() bool {
	for _, st := range m.Status() {
		if st.Healthy {
			return true
		}
	}
	return false
}

// Config is the configuration the running set was built from.
func (m *Manager) Config() *config.Config {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.cfg
}

// Close stops supervision and every plugin process, letting in-flight scans
// drain.
func (m *Manager) Close() {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	m.mu.Lock()
	slots := m.slots
	m.slots, m.order, m.closed = map[string]*slot{}, nil, true
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range slots {
		wg.Add(1)
		go func(s *slot) {
			defer wg.Done()
			s.close()
		}(s)
	}
	wg.Wait()
	m.bg.Wait()
}

// ReloadError reports a reload that was refused as a whole.
type ReloadError struct{ Diags hcl.Diagnostics }

func (e *ReloadError) Error() string { return "reload refused: " + e.Diags.Error() }

// Reload brings the running set in line with cfg: new plugins start,
// removed ones drain and stop, and a plugin whose binary, pin or config
// changed gets a new process that must start, configure and be healthy
// before it takes new scans; the old one drains. A config fault refuses the
// whole reload and leaves the running set untouched; a replacement that
// fails to start leaves the old process serving, and the failure shows in
// Status and the metrics.
func (m *Manager) Reload(ctx context.Context, cfg *config.Config) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()

	m.mu.RLock()
	current, closed := m.slots, m.closed
	m.mu.RUnlock()
	if closed {
		return errors.New("reload: the plugin manager is closed")
	}

	var changed []config.Plugin
	for _, p := range enabled(cfg) {
		s, ok := current[p.Name]
		if !ok || m.needsNewProcess(cfg, s, p) {
			changed = append(changed, p)
		}
	}
	results := m.launchAll(ctx, cfg, changed, true)
	var diags hcl.Diagnostics
	for _, r := range results {
		var ce *ConfigError
		if errors.As(r.err, &ce) {
			diags = append(diags, ce.Diags...)
		}
	}
	if diags.HasErrors() {
		m.killLaunched(results)
		return &ReloadError{Diags: diags}
	}

	byName := map[string]launchResult{}
	for _, r := range results {
		byName[r.plugin.Name] = r
	}
	next := map[string]*slot{}
	var order []string
	var failed []error
	for _, p := range enabled(cfg) {
		s, exists := current[p.Name]
		r, relaunched := byName[p.Name]
		switch {
		case relaunched && r.err != nil:
			m.metrics.swapFailures.WithLabelValues(p.Name).Inc()
			err := fmt.Errorf("plugin %q: replacement refused, %s: %w", p.Name, keepWhat(exists), r.err)
			failed = append(failed, err)
			m.log.Error("plugin swap failed", "plugin", p.Name, "error", r.err)
			if !exists {
				continue
			}
			s.setSwapErr(err)
		case relaunched && exists:
			s.swapTo(r.inst, r.spec, p.Timeout)
			s.setSwapErr(nil)
			m.metrics.swaps.WithLabelValues(p.Name).Inc()
		case relaunched:
			s = newSlot(p.Name, r.spec, p.Timeout, r.inst, m.opts, m.metrics, &m.bg, m.pluginLog(p.Name))
			m.log.Info("plugin added", "plugin", p.Name, "pid", r.inst.pid)
		default:
			s.mu.Lock()
			s.timeout = p.Timeout
			s.spec = m.spec(cfg, p)
			s.mu.Unlock()
		}
		next[p.Name] = s
		order = append(order, p.Name)
	}
	m.mu.Lock()
	m.slots, m.order, m.cfg = next, order, cfg
	m.mu.Unlock()
	for name, s := range current {
		if _, kept := next[name]; !kept {
			m.log.Info("plugin removed; draining", "plugin", name)
			m.bg.Add(1)
			go func() {
				defer m.bg.Done()
				s.close()
			}()
		}
	}
	return errors.Join(failed...)
}

func keepWhat(exists bool) string {
	if exists {
		return "the running process keeps serving"
	}
	return "the plugin is not started"
}

// needsNewProcess compares the wanted plugin with what its slot runs: the
// binary on disk (by hash), the path, the pin, and the plugin's decoded
// config.
func (m *Manager) needsNewProcess(cfg *config.Config, s *slot, p config.Plugin) bool {
	s.mu.Lock()
	spec, cur := s.spec, s.cur
	s.mu.Unlock()
	if cur == nil || spec.path != p.Path || spec.sha256 != p.SHA256 {
		return true
	}
	sum, err := shared.FileSHA256(p.Path)
	if err != nil || sum != cur.sha256 {
		return true
	}
	info, _ := cur.snapshot()
	want, diags := config.DecodePluginBody(p, info.ConfigSchema, cfg.EvalContext())
	return diags.HasErrors() || !bytes.Equal(want, cur.configJSON)
}
