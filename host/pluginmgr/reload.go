package pluginmgr

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/hcl/v2"

	"github.com/microengine/microengine/host/config"
)

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
//
// It runs in three steps: plan (which plugins need a new process), launch
// (start those, all at once), apply (install what started, drain what
// went).
func (m *Manager) Reload(ctx context.Context, cfg *config.Config) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()

	m.mu.RLock()
	current, closed := m.slots, m.closed
	m.mu.RUnlock()
	if closed {
		return errors.New("reload: the plugin manager is closed")
	}
	plan := m.plan(cfg, current)
	launched, err := m.launchPlanned(ctx, plan)
	if err != nil {
		return err
	}
	return m.apply(plan, current, launched)
}

// reloadPlan is what a reload will do.
type reloadPlan struct {
	cfg    *config.Config
	wanted []config.Plugin // the enabled plugins, in config order
	// relaunch are the wanted plugins that need a new process: added, or
	// changed in binary, pin or config.
	relaunch []config.Plugin
}

func (m *Manager) plan(cfg *config.Config, current map[string]*slot) reloadPlan {
	p := reloadPlan{cfg: cfg, wanted: enabled(cfg)}
	for _, want := range p.wanted {
		s, ok := current[want.Name]
		if !ok || s.needsNewProcess(cfg, want) {
			p.relaunch = append(p.relaunch, want)
		}
	}
	return p
}

// launchPlanned starts the planned processes. A config fault in any of
// them refuses the reload (a *ReloadError) and stops the others.
func (m *Manager) launchPlanned(ctx context.Context, p reloadPlan) (map[string]launchResult, error) {
	results := m.launchAll(ctx, p.cfg, p.relaunch, true)
	var diags hcl.Diagnostics
	for _, r := range results {
		var ce *ConfigError
		if errors.As(r.err, &ce) {
			diags = append(diags, ce.Diags...)
		}
	}
	if diags.HasErrors() {
		m.killLaunched(results)
		return nil, &ReloadError{Diags: diags}
	}
	byName := make(map[string]launchResult, len(results))
	for _, r := range results {
		byName[r.plugin.Name] = r
	}
	return byName, nil
}

// apply installs the new processes, keeps the untouched ones (with the new
// timeout and spec), and drains the plugins cfg no longer has. It returns
// the replacements that failed to start.
func (m *Manager) apply(p reloadPlan, current map[string]*slot, launched map[string]launchResult) error {
	next := map[string]*slot{}
	var order []string
	var failed []error
	for _, want := range p.wanted {
		s, exists := current[want.Name]
		r, relaunched := launched[want.Name]
		switch {
		case relaunched && r.err != nil:
			m.metrics.swapFailures.WithLabelValues(want.Name).Inc()
			err := fmt.Errorf("plugin %q: replacement refused, %s: %w", want.Name, keepWhat(exists), r.err)
			failed = append(failed, err)
			m.log.Error("plugin swap failed", "plugin", want.Name, "error", r.err)
			if !exists {
				continue
			}
			s.setSwapErr(err)
		case relaunched && exists:
			s.swapTo(r.inst, r.spec, want.Timeout)
			m.metrics.swaps.WithLabelValues(want.Name).Inc()
		case relaunched:
			s = m.newSlot(r)
			m.log.Info("plugin added", "plugin", want.Name, "pid", r.inst.pid)
		default:
			s.reconfigure(m.spec(p.cfg, want), want.Timeout)
		}
		next[want.Name] = s
		order = append(order, want.Name)
	}
	m.mu.Lock()
	m.slots, m.order, m.cfg = next, order, p.cfg
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
