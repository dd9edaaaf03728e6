// Package pluginmgr launches the scanner plugins named in engine.hcl, keeps
// each one running (health checks, relaunch with backoff) and swaps a
// plugin's process for a new one without losing a scan. When a process
// dies under scans, each is retried once, alone, on the relaunched process,
// so a poison artifact is answered unknown and costs no other verdict
// (scan.go).
package pluginmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/shared"
	pluginlaunch "github.com/microengine/microengine/shared/launch"
)

// Options tune supervision. Zero values take the defaults.
type Options struct {
	HealthInterval time.Duration // default engine.health_interval, else config.DefaultHealthInterval
	DrainTimeout   time.Duration // default engine.drain_timeout, else config.DefaultDrainTimeout
	KillTimeout    time.Duration // default 5s
	BackoffBase    time.Duration // default 250ms
	BackoffMax     time.Duration // default 30s
	// StableAfter is how long a process must live for its crash not to
	// count towards the backoff streak. Default 30s.
	StableAfter time.Duration
	// WaitForPlugin is how long a scan waits for a plugin whose relaunch
	// is held back (backoff after failed launches or a crash loop) before
	// it gives up (unknown). A plugin relaunched at once after a crash is
	// waited for within the scan's own timeout. Default 5s.
	WaitForPlugin time.Duration
	StartTimeout  time.Duration // default pluginlaunch.DefaultStartTimeout
	// CallTimeout bounds each Info and Health call (Configure has a
	// budget of its own, configureTimeout). Default 10s.
	CallTimeout time.Duration
	// DigestDir, when set, remembers the sha256 of each unpinned plugin
	// binary while the file stays as it was hashed
	// (pluginlaunch.RememberedFileSHA256), so a start does not hash it
	// again. Empty: every start hashes the binary.
	DigestDir string
}

func (o Options) withDefaults(cfg *config.Config) Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.HealthInterval, cfg.Engine.HealthInterval)
	def(&o.HealthInterval, config.DefaultHealthInterval)
	def(&o.DrainTimeout, cfg.Engine.DrainTimeout)
	def(&o.DrainTimeout, config.DefaultDrainTimeout)
	def(&o.KillTimeout, defaultKillTimeout)
	def(&o.BackoffBase, 250*time.Millisecond)
	def(&o.BackoffMax, 30*time.Second)
	def(&o.StableAfter, 30*time.Second)
	def(&o.WaitForPlugin, 5*time.Second)
	def(&o.StartTimeout, pluginlaunch.DefaultStartTimeout)
	def(&o.CallTimeout, defaultCallTimeout)
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

	// pinDir holds verified copies of sha256-pinned binaries, by hash,
	// for as long as the manager runs: a pinned plugin is launched,
	// relaunched and swapped from there, so the bytes hashed are the bytes
	// executed (see launch.Config.PinDir). Made by pinnedDir when a
	// plugin is pinned.
	pinMu  sync.Mutex
	pinDir string

	mu  sync.RWMutex
	cfg *config.Config
	// policy is PolicyOf(policyCfg), kept for Policy while policyCfg is
	// cfg.
	policy    engine.Policy
	policyCfg *config.Config
	slots     map[string]*slot
	order     []string
	closed    bool
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
	if slices.ContainsFunc(enabled(cfg), func(p config.Plugin) bool { return p.SHA256 != "" }) {
		if _, err := m.pinnedDir(); err != nil {
			return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot make the directory for pinned plugin binaries", Detail: err.Error()}}
		}
	}
	results := m.launchAll(ctx, cfg, enabled(cfg), false)
	var diags hcl.Diagnostics
	for _, r := range results {
		diags = append(diags, r.diags()...)
	}
	if diags.HasErrors() {
		m.killLaunched(results)
		m.removePinnedDir()
		return nil, diags
	}
	for _, r := range results {
		m.slots[r.plugin.Name] = m.newSlot(r)
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

// newSlot makes the slot for a plugin whose first process r launched.
func (m *Manager) newSlot(r launchResult) *slot {
	return newSlot(slotConfig{
		name: r.plugin.Name, spec: r.spec, timeout: r.plugin.Timeout, first: r.inst,
		opts: m.opts, metrics: m.metrics, bg: &m.bg, log: m.pluginLog(r.plugin.Name),
	})
}

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
		Extra:    startFailure{},
		Detail:   r.err.Error(),
		Subject:  r.plugin.DefRange.Ptr(),
	}}
}

// startFailure marks a diagnostic about a plugin that could not start
// (its binary, its handshake), as opposed to a fault in its config block.
type startFailure struct{}

// IsStartFailure reports whether d says a plugin could not start rather
// than that engine.hcl is at fault.
func IsStartFailure(d *hcl.Diagnostic) bool {
	_, ok := d.Extra.(startFailure)
	return ok
}

func (m *Manager) spec(cfg *config.Config, p config.Plugin) launchSpec {
	var pinDir string
	if p.SHA256 != "" {
		var err error
		if pinDir, err = m.pinnedDir(); err != nil {
			// Each launch then verifies into a folder of its own.
			m.log.Warn("cannot make the directory for pinned plugin binaries", "plugin", p.Name, "error", err)
		}
	}
	return launchSpec{
		name: p.Name, path: p.Path, sha256: p.SHA256, pinDir: pinDir, digestDir: m.opts.DigestDir,
		startTimeout: m.opts.StartTimeout, callTimeout: m.opts.CallTimeout,
		logger: m.pluginLog(p.Name),
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
			pluginlaunch.KillClient(r.inst.client, m.opts.KillTimeout, m.log)
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
	m.removePinnedDir()
}

// pinnedDir returns the manager's folder of verified copies of pinned
// binaries, made on first use: a run without pinned plugins makes none (a
// mkdir and a removal in /tmp at every start of a `scan`).
func (m *Manager) pinnedDir() (string, error) {
	m.pinMu.Lock()
	defer m.pinMu.Unlock()
	if m.pinDir == "" {
		dir, err := os.MkdirTemp("", "microengine-pinned-")
		if err != nil {
			return "", err
		}
		m.pinDir = dir
	}
	return m.pinDir, nil
}

func (m *Manager) removePinnedDir() {
	m.pinMu.Lock()
	defer m.pinMu.Unlock()
	if m.pinDir != "" {
		_ = os.RemoveAll(m.pinDir)
	}
}
