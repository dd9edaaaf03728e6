package main

import (
	"context"
	"fmt"
	"io"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/pluginmgr"
)

// runValidate checks engine.hcl and then each plugin's own config block, by
// launching the plugins and letting them judge it: a fault either side
// finds is printed at its file:line.
func runValidate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate", stderr, "validate -config FILE [-static]")
	var cf configFlags
	cf.register(fs)
	static := fs.Bool("static", false, "check engine.hcl only; do not launch plugins to check their config blocks")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := cf.load(stderr)
	if !ok {
		return 1
	}
	if !*static {
		mgr, diags := pluginmgr.New(ctx, cfg, cf.logger(cfg, stderr).Named("validate"), pluginmgr.Options{})
		if diags.HasErrors() {
			_ = config.WriteDiagnostics(stderr, cfg.Files, diags)
			return 1
		}
		defer mgr.Close()
		for _, st := range mgr.Status() {
			fmt.Fprintf(stdout, "plugin %q: %s %s\n", st.Name, st.Version, healthWord(st))
			// A healthy plugin's own account of what it loaded (e.g. the
			// yara plugin's rule files skipped, with file:line).
			if st.Healthy && st.Health != "" {
				fmt.Fprintf(stdout, "  %s\n", st.Health)
			}
		}
	}
	fmt.Fprintf(stdout, "%s: valid\n", cf.path)
	return 0
}
