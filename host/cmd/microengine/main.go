// Command microengine is the microengine host: it scans files, validates
// engine.hcl, reports on plugins, checks plugins against the contract, and
// takes part in the PolySwarm marketplace.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"syscall"
)

// command is one verb of the CLI. Each returns the process exit code.
type command struct {
	synopsis string
	run      func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"scan":        {"scan files with every enabled plugin", runScan},
		"validate":    {"check engine.hcl and every plugin's own config", runValidate},
		"plugins":     {"show each plugin's versions and health", runPlugins},
		"conformance": {"check a plugin binary against the plugin contract", runConformance},
		"run":         {"take part in the marketplace: webhooks in, assertions out", runEngine},
		"reload":      {"make a running engine re-read engine.hcl and swap plugins", runReload},
		"bounties":    {"list the bounties a running or stopped engine has stored", runBounties},
		"simulate":    {"play the marketplace against an engine and print a scoreboard", runSimulate},
		"version":     {"print the host's version", runVersion},
		"new-plugin":  {"write plugins/NAME: a scanner plugin that passes conformance, to start from", runNewPlugin},
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "scan" && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(scanProcs(runtime.GOMAXPROCS(0)))
	}
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// scanProcs is how many threads `scan` runs Go code on, out of n, by the
// clamav plugin's rule (plugins/clamav/main.go): the host only opens the
// files and relays them to the plugins, while the backends beside it do
// the scanning. With every core, each burst of answers woke an idle
// thread to share it out (futex and spinning, a third of the host's CPU
// on 4,000 × 4 KiB files went to switching threads); one thread on 2
// cores cut the host's context switches from 9,200-14,200 to 7,700-8,600.
// GOMAXPROCS in the environment overrides this.
func scanProcs(n int) int {
	return max(1, n/4)
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "microengine: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "Usage: microengine <command> [options]")
	fmt.Fprintln(w)
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, cmds[n].synopsis)
	}
	fmt.Fprintln(w, "\nRun `microengine <command> -h` for a command's options.")
}
