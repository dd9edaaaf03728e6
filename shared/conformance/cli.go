package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/launch"
)

// Resolver turns `-config FILE -plugin NAME` into a Config: the plugin's
// path, pin and config block from engine.hcl. The host supplies it, so
// this package never imports the host's config package.
type Resolver func(configFile, pluginName string) (Config, error)

// Exit codes of Main.
const (
	ExitOK     = 0 // every MUST check passed
	ExitFailed = 1 // a MUST check failed (or a SHOULD one, with -strict)
	ExitUsage  = 2 // bad flags, or a config that could not be resolved
	// ExitIncomplete: the run was interrupted before every selected check
	// ran to its end. A run that did not finish is not a pass, whatever
	// the checks that did run said.
	ExitIncomplete = 3
	usageSuffix    = "\nUsage: microengine conformance [flags] (-config engine.hcl -plugin NAME | PATH)"
)

// Main is the CLI entry point behind `microengine conformance`. It
// parses args, runs the suite, prints one line per check and a summary
// (or, with -json, the Report) on stdout, and returns the exit code.
// resolve may be nil, in which case only a PATH is accepted.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, resolve Resolver) int {
	inv, code, ok := parseArgs(args, stderr, resolve)
	if !ok {
		return code
	}
	if inv.list {
		return listChecks(stdout, inv.asJSON)
	}
	report, err := inv.run(ctx, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return ExitUsage
	}
	return writeReport(stdout, stderr, report, inv.asJSON)
}

// invocation is what a command line asks for.
type invocation struct {
	cfg    Config
	filter *regexp.Regexp
	asJSON bool
	list   bool
}

// cliFlags are the command's flags as parsed.
type cliFlags struct {
	configFile, pluginName, runRe, stopBackend, pluginConfig, sha, largeSize, samples *string
	startTimeout, callTimeout                                                         *time.Duration
	asJSON, strict, list, verbose                                                     *bool
}

func newFlags(stderr io.Writer) (*flag.FlagSet, *cliFlags) {
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &cliFlags{
		configFile:   fs.String("config", "", "engine.hcl to take the plugin's path, sha256 pin and config block from (with -plugin; default engine.hcl)"),
		pluginName:   fs.String("plugin", "", "the plugin block's NAME in -config"),
		asJSON:       fs.Bool("json", false, "print the report as JSON"),
		runRe:        fs.String("run", "", "run only the checks whose id matches this regular expression"),
		stopBackend:  fs.String("stop-backend", "", "shell command that makes the plugin's backend unreachable, for the BACKEND checks"),
		pluginConfig: fs.String("plugin-config", "", "the plugin's config as a JSON object (or @FILE), instead of the config block"),
		sha:          fs.String("sha256", "", "pin the binary to this sha256"),
		samples:      fs.String("samples", "", "a folder of samples, named by their expected verdict: DIR/malicious/..., DIR/benign/... (also used to derive hostile inputs)"),
		startTimeout: fs.Duration("start-timeout", launch.DefaultStartTimeout, "bound on the plugin's handshake"),
		callTimeout:  fs.Duration("call-timeout", DefaultCallTimeout, "bound on each call to the plugin"),
		largeSize:    fs.String("large-size", "64MiB", "size of the large artifact (LARGE-001)"),
		strict:       fs.Bool("strict", false, "fail on SHOULD checks too"),
		list:         fs.Bool("list", false, "list the checks and exit"),
		verbose:      fs.Bool("v", false, "copy the plugin's log to stderr"),
	}
	fs.Usage = func() {
		fmt.Fprintln(stderr, strings.TrimPrefix(usageSuffix, "\n"))
		fmt.Fprintln(stderr, "\nChecks a scanner plugin binary against the plugin contract. Exit status 0 when every MUST check passes.")
		fs.PrintDefaults()
	}
	return fs, f
}

// parseArgs turns the command line into an invocation. When ok is false
// the command is over, with code (usage and flag errors are printed).
func parseArgs(args []string, stderr io.Writer, resolve Resolver) (inv invocation, code int, ok bool) {
	fs, f := newFlags(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return inv, ExitOK, false
		}
		return inv, ExitUsage, false
	}
	inv.asJSON, inv.list = *f.asJSON, *f.list
	if inv.list {
		return inv, ExitOK, true
	}
	usage := func(format string, a ...any) (invocation, int, bool) {
		fmt.Fprintf(stderr, "conformance: "+format+usageSuffix+"\n", a...)
		return inv, ExitUsage, false
	}
	cfg, err := target(fs, f, resolve)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return usage("%s", ue)
		}
		fmt.Fprintf(stderr, "conformance: %v\n", err)
		return inv, ExitUsage, false
	}
	if cfg, err = f.apply(fs, cfg, stderr); err != nil {
		return usage("%v", err)
	}
	inv.cfg = cfg
	if *f.runRe != "" {
		if inv.filter, err = regexp.Compile(*f.runRe); err != nil {
			return usage("-run: %v", err)
		}
	}
	return inv, ExitOK, true
}

// usageError is a command line that names no plugin, or names it twice.
type usageError string

func (e usageError) Error() string { return string(e) }

// target finds the plugin to check: a PATH, or a block of -config.
func target(fs *flag.FlagSet, f *cliFlags, resolve Resolver) (Config, error) {
	if *f.pluginName != "" && *f.configFile == "" && fs.NArg() == 0 {
		*f.configFile = "engine.hcl" // as every other command defaults
	}
	switch {
	case fs.NArg() > 1:
		return Config{}, usageError(fmt.Sprintf("one plugin at a time, got %d paths", fs.NArg()))
	case fs.NArg() == 1 && (*f.configFile != "" || *f.pluginName != ""):
		return Config{}, usageError("give either a PATH or -config and -plugin, not both")
	case fs.NArg() == 1:
		return Config{Plugin: fs.Arg(0)}, nil
	case *f.configFile == "" || *f.pluginName == "":
		return Config{}, usageError("give a plugin binary PATH, or both -config and -plugin")
	case resolve == nil:
		return Config{}, usageError("-config is not supported by this build; give a PATH")
	}
	return resolve(*f.configFile, *f.pluginName)
}

// apply lays the flags over cfg. Flags the user set win over what the
// resolver returned; the others leave it alone.
func (f *cliFlags) apply(fs *flag.FlagSet, cfg Config, stderr io.Writer) (Config, error) {
	if *f.pluginConfig != "" {
		raw := []byte(*f.pluginConfig)
		if name, ok := strings.CutPrefix(*f.pluginConfig, "@"); ok {
			var err error
			if raw, err = os.ReadFile(name); err != nil {
				return cfg, fmt.Errorf("-plugin-config: %w", err)
			}
		}
		if _, err := configObject(raw); err != nil {
			return cfg, fmt.Errorf("-plugin-config: %w", err)
		}
		cfg.PluginConfig, cfg.PluginConfigFor = raw, nil
	}
	if *f.sha != "" {
		cfg.SHA256 = *f.sha
	}
	if *f.stopBackend != "" {
		cfg.StopBackend, cfg.StopBackendCommand = nil, []string{"/bin/sh", "-c", *f.stopBackend}
	}
	if *f.samples != "" {
		samples, err := LoadSamples(*f.samples)
		if err != nil {
			return cfg, fmt.Errorf("-samples: %w", err)
		}
		cfg.Samples = append(cfg.Samples, samples...)
	}
	size, err := shared.ParseSize(*f.largeSize)
	if err != nil || size <= 0 {
		return cfg, fmt.Errorf("-large-size: %v", err)
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if set["start-timeout"] || cfg.StartTimeout == 0 {
		cfg.StartTimeout = *f.startTimeout
	}
	if set["call-timeout"] || cfg.CallTimeout == 0 {
		cfg.CallTimeout = *f.callTimeout
	}
	if set["large-size"] || cfg.LargeSize == 0 {
		cfg.LargeSize = size
	}
	cfg.Strict = cfg.Strict || *f.strict
	if *f.verbose {
		cfg.LogOutput, cfg.LogLevel = stderr, hclog.Debug
	}
	return cfg, nil
}

// run runs the suite, printing each check's line as it ends unless the
// report goes out as JSON.
func (inv invocation) run(ctx context.Context, stdout io.Writer) (Report, error) {
	var onResult func(CheckResult)
	if !inv.asJSON {
		fmt.Fprintf(stdout, "conformance of %s\n", inv.cfg.Plugin)
		onResult = func(r CheckResult) { fmt.Fprintln(stdout, r.Line()) }
	}
	return runSuite(ctx, inv.cfg, inv.filter, onResult)
}

// writeReport ends the output (the verdict, or the JSON report) and
// returns the exit code.
func writeReport(stdout, stderr io.Writer, report Report, asJSON bool) int {
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			fmt.Fprintf(stderr, "conformance: %v\n", err)
			return ExitUsage
		}
	} else {
		printVerdict(stdout, report)
	}
	switch {
	case report.Interrupted:
		return ExitIncomplete
	case !report.OK:
		return ExitFailed
	}
	return ExitOK
}

// printVerdict ends the text report: who was checked, the tally, and the
// MUST requirements that were not met.
func printVerdict(w io.Writer, r Report) {
	if r.Plugin.Name != "" {
		fmt.Fprintf(w, "plugin %s %s, sha256 %s, checked in %s\n", r.Plugin.Name, r.Plugin.Version, r.Plugin.SHA256, r.Duration.Round(time.Millisecond))
	}
	fmt.Fprintln(w, r.Summary())
	var failed []string
	for _, c := range r.Results {
		if c.Failed(r.Strict) {
			failed = append(failed, c.ID)
		}
	}
	switch {
	case len(failed) > 0:
		fmt.Fprintf(w, "NOT CONFORMANT: %s\n", strings.Join(failed, ", "))
	case !r.Interrupted:
		fmt.Fprintln(w, "CONFORMANT")
	}
	if r.Interrupted {
		fmt.Fprintf(w, "INCOMPLETE: the run was interrupted; not run: %s\n", strings.Join(r.NotRun, ", "))
	}
}

func listChecks(w io.Writer, asJSON bool) int {
	checks := Checks()
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(checks); err != nil {
			return ExitUsage
		}
		return ExitOK
	}
	for _, c := range checks {
		fmt.Fprintf(w, "%-15s %-6s %s\n", c.ID, c.Level, c.Requirement)
	}
	return ExitOK
}
