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
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
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
