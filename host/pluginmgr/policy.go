package pluginmgr

import (
	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
)

// Policy is the composition policy of the engine.hcl in force (its last
// successful reload): the engine asks it on every scan, so it is read out
// of the config once per config, not a map built per artifact. Callers
// must not modify it.
func (m *Manager) Policy() engine.Policy {
	m.mu.RLock()
	cfg, pol, polCfg := m.cfg, m.policy, m.policyCfg
	m.mu.RUnlock()
	if polCfg == cfg {
		return pol
	}
	pol = PolicyOf(cfg)
	m.mu.Lock()
	if m.cfg == cfg {
		m.policy, m.policyCfg = pol, cfg
	}
	m.mu.Unlock()
	return pol
}

// PolicyOf reads the composition policy out of a config: the engine's
// malicious_quorum and each plugin's max_verdict and weight.
func PolicyOf(cfg *config.Config) engine.Policy {
	p := engine.Policy{MaliciousQuorum: cfg.Engine.MaliciousQuorum, Plugins: map[string]engine.PluginPolicy{}}
	for _, pl := range cfg.Plugins {
		p.Plugins[pl.Name] = engine.PluginPolicy{MaxVerdict: pl.MaxVerdict, Weight: pl.Weight}
	}
	return p
}

var _ engine.PolicySource = (*Manager)(nil)
