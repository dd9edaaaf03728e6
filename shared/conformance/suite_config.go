package conformance

// Checks of configuration faults and idempotence: CONFIG-002..005.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/microengine/microengine/shared"
)

// serialVerdicts scans every sample once with the default chunking.
func (e *env) serialVerdicts(ctx context.Context, s *session, items []item, label string) []answer {
	out := make([]answer, len(items))
	for i, it := range items {
		out[i] = e.scanBytes(ctx, s, nil, fmt.Sprintf("Scan(%s%s)", it.name, label), it.content)
	}
	return out
}

func checkConfigIdempotent(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	raw := e.r.pluginConfig
	var items []item
	if s.pluginInfo.Supports(shared.ArtifactFile) {
		items = e.samples(s)
	}
	before := e.serialVerdicts(ctx, s, items, "")
	var p problems
	for i := 1; i <= 2; i++ {
		if err := s.configure(ctx, fmt.Sprintf("Configure(the suite's config, #%d)", i), raw); err != nil {
			p.add("%v", err)
		}
	}
	after := e.serialVerdicts(ctx, s, items, ", after reconfiguring")
	for i := range items {
		if !after[i].same(before[i]) {
			p.add("sample %q: %s before, %s after", items[i].name, before[i], after[i])
		}
	}
	return p.outcome("accepted twice; %d verdicts unchanged", len(items))
}

// badConfig is a config the plugin must reject, and the setting at fault.
type badConfig struct {
	what  string
	field string
	raw   []byte
}

const unknownSetting = "no_such_setting_xyz"

func (e *env) unknownSettingConfig() (badConfig, error) {
	raw, err := withSetting(e.r.pluginConfig, unknownSetting, "1")
	return badConfig{"an unknown setting " + unknownSetting, unknownSetting, raw}, err
}

// wrongTypeConfig sets the first declared setting to a value of another
// type; ok is false when the plugin declares no settings.
func (e *env) wrongTypeConfig(s *session) (badConfig, bool, error) {
	if len(s.pluginInfo.ConfigSchema) == 0 {
		return badConfig{}, false, nil
	}
	f := s.pluginInfo.ConfigSchema[0]
	var value string
	switch f.Type {
	case shared.FieldString:
		value = `12345`
	case shared.FieldNumber:
		value = `"not a number"`
	case shared.FieldBool:
		value = `"not a bool"`
	default: // durations and sizes arrive as strings and integers
		value = `{"not": "a scalar"}`
	}
	raw, err := withSetting(e.r.pluginConfig, f.Name, value)
	return badConfig{fmt.Sprintf("%s (a %s) set to %s", f.Name, f.Type, value), f.Name, raw}, true, err
}

// rejectConfig applies bad and expects a *shared.ConfigError; then it puts
// the suite's config back so later checks are unaffected.
func (e *env) rejectConfig(ctx context.Context, s *session, bad badConfig) (*shared.ConfigError, outcome, bool) {
	err := s.configure(ctx, "Configure("+bad.what+")", bad.raw)
	restore := s.configure(ctx, "Configure(the suite's config, after a rejected one)", e.r.pluginConfig)
	var ce *shared.ConfigError
	switch {
	case err == nil:
		return nil, failf("Configure accepted %s: a typo in engine.hcl would pass silently", bad.what), false
	case !errors.As(err, &ce):
		return nil, failf("the call failed instead of returning a *shared.ConfigError: %v", err), false
	case restore != nil:
		s.taint("the suite's config could not be restored")
		return nil, failf("the fault was reported, but then %v", restore), false
	}
	for _, f := range ce.Fields {
		if strings.TrimSpace(f.Message) == "" {
			return nil, failf("rejected %s without a message: %v", bad.what, ce), false
		}
	}
	if len(ce.Fields) == 0 {
		return nil, failf("rejected %s with an empty ConfigError", bad.what), false
	}
	return ce, outcome{}, true
}

func checkConfigUnknownSetting(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	bad, err := e.unknownSettingConfig()
	if err != nil {
		return failf("%v", err)
	}
	ce, out, ok := e.rejectConfig(ctx, s, bad)
	if !ok {
		return out
	}
	return passf("rejected: %v", ce)
}

func checkConfigWrongType(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	bad, ok, err := e.wrongTypeConfig(s)
	switch {
	case err != nil:
		return failf("%v", err)
	case !ok:
		return skipf("the plugin declares no settings, so none can have the wrong type (CONFIG-003 covers unknown ones)")
	}
	ce, out, ok := e.rejectConfig(ctx, s, bad)
	if !ok {
		return out
	}
	return passf("rejected %s: %v", bad.what, ce)
}

func checkConfigNamesField(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	bads := []badConfig{}
	bad, err := e.unknownSettingConfig()
	if err != nil {
		return failf("%v", err)
	}
	bads = append(bads, bad)
	if bad, ok, err := e.wrongTypeConfig(s); err != nil {
		return failf("%v", err)
	} else if ok {
		bads = append(bads, bad)
	}
	var p problems
	for _, bad := range bads {
		ce, out, ok := e.rejectConfig(ctx, s, bad)
		if !ok {
			p.add("%s: %s", bad.what, out.actual)
			continue
		}
		named := false
		for _, f := range ce.Fields {
			if f.Field == bad.field || strings.Contains(f.Message, bad.field) {
				named = true
			}
		}
		if !named {
			p.add("the fault in %s does not name %q: %v", bad.what, bad.field, ce)
		}
	}
	return p.outcome("faults naming their setting: %d", len(bads))
}

// withSetting returns the config object raw with name set to the JSON
// value.
func withSetting(raw []byte, name, value string) ([]byte, error) {
	m, err := configObject(raw)
	if err != nil {
		return nil, fmt.Errorf("the suite's config: %w", err)
	}
	m[name] = []byte(value)
	return marshalConfig(m)
}
