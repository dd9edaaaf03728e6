package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/microengine/microengine/host/admin"
	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/pluginmgr"
)

// runPlugins reports each plugin. When an engine runs from this config it
// asks that engine (so the report is what really runs: PIDs, binary hashes,
// restarts); otherwise it launches the plugins itself to ask them.
func runPlugins(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("plugins", stderr, "plugins -config FILE [-json]")
	var cf configFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := cf.load(stderr)
	if !ok {
		return 1
	}
	rep, source, err := pluginReport(ctx, cfg, cf, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "plugins: %v\n", err)
		return 1
	}
	if *asJSON {
		out := struct {
			Source string `json:"source"`
			admin.Report
		}{source, rep}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	} else {
		printPlugins(stdout, source, rep)
	}
	for _, st := range rep.Plugins {
		if !st.Healthy {
			return 1
		}
	}
	return 0
}

func pluginReport(ctx context.Context, cfg *config.Config, cf configFlags, stderr io.Writer) (admin.Report, string, error) {
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	rep, err := admin.NewClient(cfg.Engine.Admin).Plugins(actx)
	cancel()
	if err == nil {
		return rep, "running engine", nil
	}
	if !errors.Is(err, admin.ErrNotRunning) {
		return admin.Report{}, "", err
	}
	mgr, diags := pluginmgr.New(ctx, cfg, cf.logger(cfg, stderr), pluginmgr.Options{})
	if diags.HasErrors() {
		_ = config.WriteDiagnostics(stderr, cfg.Files, diags)
		return admin.Report{}, "", errors.New(notStarted(diags))
	}
	defer mgr.Close()
	return admin.Report{Config: cf.path, Plugins: mgr.Status()}, "launched for this report", nil
}

// notStarted says why no report could be made: a fault in engine.hcl (a
// plugin's config block, found by the host or the plugin) is the
// operator's to fix, unlike a binary that would not start.
func notStarted(diags hcl.Diagnostics) string {
	for _, d := range diags {
		if d.Severity == hcl.DiagError && !pluginmgr.IsStartFailure(d) {
			return "engine.hcl has faults (above), so no plugin was started; `microengine validate` checks a fix"
		}
	}
	return "the plugins could not be started (above)"
}

func printPlugins(w io.Writer, source string, rep admin.Report) {
	if rep.PID != 0 {
		fmt.Fprintf(w, "engine pid %d, up since %s (%s)\n", rep.PID, rep.StartedAt.Format(time.RFC3339), source)
	} else {
		fmt.Fprintf(w, "no engine running; plugins %s\n", source)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tBACKEND\tSIGNATURES\tHEALTH\tPID\tSHA256\tSTARTED\tRESTARTS")
	for _, st := range rep.Plugins {
		sum := st.SHA256
		if len(sum) > 12 {
			sum = sum[:12]
		}
		started := "-"
		if !st.StartedAt.IsZero() {
			started = st.StartedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\n", st.Name, orDash(st.Version), orDash(st.VendorVersion),
			orDash(st.SignaturesVersion), healthWord(st), st.PID, orDash(sum), started, st.Restarts)
	}
	tw.Flush()
	for _, st := range rep.Plugins {
		// The plugin's own account in full (the table cuts it): what its
		// backend said, what it loaded, what it skipped and why (the yara
		// plugin's rule files at file:line, a rule reload that failed).
		if st.Health != "" {
			fmt.Fprintf(w, "%s: %s\n", st.Name, st.Health)
		}
		if st.SwapError != "" {
			fmt.Fprintf(w, "%s: last swap failed: %s\n", st.Name, st.SwapError)
		}
		if st.LastCrash != "" {
			fmt.Fprintf(w, "%s: %d crashes, the last at %s\n", st.Name, st.Crashes, st.LastCrash)
		}
	}
}

func healthWord(st pluginmgr.Status) string {
	switch {
	case !st.Up:
		return "down (" + oneLine(orDash(st.LastError), 100) + ")"
	case st.Healthy:
		return "healthy"
	}
	return "unhealthy (" + oneLine(st.Health, 100) + ")"
}
