package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/conformance"
)

// runConformance checks a plugin binary against the plugin contract. The
// suite, its flags and its output live in shared/conformance (the same
// checks `go test` runs through conformance.Run); the host only adds the
// way from `-config engine.hcl -plugin NAME` to a binary, its pin and its
// config block.
func runConformance(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return conformance.Main(ctx, args, stdout, stderr, func(file, name string) (conformance.Config, error) {
		return resolvePlugin(file, name, stderr)
	})
}

// resolvePlugin finds plugin NAME in an engine.hcl. Its config block can
// only be decoded against the schema the plugin declares, so decoding is
// left to PluginConfigFor, which the suite calls once it has the plugin's
// Info; faults in the block are printed at their file:line on stderr.
func resolvePlugin(file, name string, stderr io.Writer) (conformance.Config, error) {
	cfg, diags := config.Load(file)
	if diags.HasErrors() {
		_ = config.WriteDiagnostics(stderr, cfg.Files, diags)
		return conformance.Config{}, fmt.Errorf("%s is not valid (see above)", file)
	}
	p, ok := cfg.Plugin(name)
	if !ok {
		names := make([]string, 0, len(cfg.Plugins))
		for _, q := range cfg.Plugins {
			names = append(names, q.Name)
		}
		sort.Strings(names)
		return conformance.Config{}, fmt.Errorf("%s has no plugin %q (it has: %s)", file, name, strings.Join(names, ", "))
	}
	return conformance.Config{
		Plugin: p.Path,
		SHA256: p.SHA256,
		PluginConfigFor: func(_ context.Context, info shared.Info) ([]byte, error) {
			raw, diags := config.DecodePluginBody(p, info.ConfigSchema, cfg.EvalContext())
			if diags.HasErrors() {
				_ = config.WriteDiagnostics(stderr, cfg.Files, diags)
				return nil, fmt.Errorf("plugin %q: its config block in %s does not match the schema the plugin declares (see stderr)", name, file)
			}
			return raw, nil
		},
	}, nil
}
