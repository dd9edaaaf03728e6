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
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configFile   = fs.String("config", "", "engine.hcl to take the plugin's path, sha256 pin and config block from (with -plugin; default engine.hcl)")
		pluginName   = fs.String("plugin", "", "the plugin block's NAME in -config")
		asJSON       = fs.Bool("json", false, "print the report as JSON")
		runRe        = fs.String("run", "", "run only the checks whose id matches this regular expression")
		stopBackend  = fs.String("stop-backend", "", "shell command that makes the plugin's backend unreachable, for the BACKEND checks")
		pluginConfig = fs.String("plugin-config", "", "the plugin's config as a JSON object (or @FILE), instead of the config block")
		sha          = fs.String("sha256", "", "pin the binary to this sha256")
		startTimeout = fs.Duration("start-timeout", launch.DefaultStartTimeout, "bound on the plugin's handshake")
		callTimeout  = fs.Duration("call-timeout", DefaultCallTimeout, "bound on each call to the plugin")
		largeSize    = fs.String("large-size", "64MiB", "size of the large artifact (LARGE-001)")
		strict       = fs.Bool("strict", false, "fail on SHOULD checks too")
		list         = fs.Bool("list", false, "list the checks and exit")
		verbose      = fs.Bool("v", false, "copy the plugin's log to stderr")
	)
	fs.Usage = func() {
		fmt.Fprintln(stderr, strings.TrimPrefix(usageSuffix, "\n"))
		fmt.Fprintln(stderr, "\nChecks a scanner plugin binary against the plugin contract. Exit status 0 when every MUST check passes.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if *list {
		return listChecks(stdout, *asJSON)
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "conformance: "+format+usageSuffix+"\n", a...)
		return ExitUsage
	}

	if *pluginName != "" && *configFile == "" && fs.NArg() == 0 {
		*configFile = "engine.hcl" // as every other command defaults
	}
	var cfg Config
	switch {
	case fs.NArg() > 1:
		return usage("one plugin at a time, got %d paths", fs.NArg())
	case fs.NArg() == 1 && (*configFile != "" || *pluginName != ""):
		return usage("give either a PATH or -config and -plugin, not both")
	case fs.NArg() == 1:
		cfg.Plugin = fs.Arg(0)
	case *configFile == "" || *pluginName == "":
		return usage("give a plugin binary PATH, or both -config and -plugin")
	case resolve == nil:
		return usage("-config is not supported by this build; give a PATH")
	default:
		var err error
		if cfg, err = resolve(*configFile, *pluginName); err != nil {
			fmt.Fprintf(stderr, "conformance: %v\n", err)
			return ExitUsage
		}
	}

	if *pluginConfig != "" {
		raw := []byte(*pluginConfig)
		if name, ok := strings.CutPrefix(*pluginConfig, "@"); ok {
			var err error
			if raw, err = os.ReadFile(name); err != nil {
				return usage("-plugin-config: %v", err)
			}
		}
		if _, err := configObject(raw); err != nil {
			return usage("-plugin-config: %v", err)
		}
		cfg.PluginConfig, cfg.PluginConfigFor = raw, nil
	}
	if *sha != "" {
		cfg.SHA256 = *sha
	}
	if *stopBackend != "" {
		cfg.StopBackend, cfg.StopBackendCommand = nil, []string{"/bin/sh", "-c", *stopBackend}
	}
	size, err := shared.ParseSize(*largeSize)
	if err != nil || size <= 0 {
		return usage("-large-size: %v", err)
	}
	// Flags the user set win over what resolve returned; the others leave
	// it alone.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["start-timeout"] || cfg.StartTimeout == 0 {
		cfg.StartTimeout = *startTimeout
	}
	if set["call-timeout"] || cfg.CallTimeout == 0 {
		cfg.CallTimeout = *callTimeout
	}
	if set["large-size"] || cfg.LargeSize == 0 {
		cfg.LargeSize = size
	}
	cfg.Strict = cfg.Strict || *strict
	if *verbose {
		cfg.LogOutput, cfg.LogLevel = stderr, hclog.Debug
	}
	var filter *regexp.Regexp
	if *runRe != "" {
		if filter, err = regexp.Compile(*runRe); err != nil {
			return usage("-run: %v", err)
		}
	}

	var onResult func(CheckResult)
	if !*asJSON {
		fmt.Fprintf(stdout, "conformance of %s\n", cfg.Plugin)
		onResult = func(r CheckResult) { fmt.Fprintln(stdout, r.Line()) }
	}
	report, err := runSuite(ctx, cfg, filter, onResult)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return ExitUsage
	}
	if *asJSON {
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
