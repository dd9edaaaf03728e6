package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/microengine/microengine/host/admin"
)

// runReload asks a running engine to re-read engine.hcl and swap what
// changed.
func runReload(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("reload", stderr, "reload -config FILE")
	var cf configFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := cf.load(stderr)
	if !ok {
		fmt.Fprintln(stderr, "reload: not sent: fix engine.hcl first; the running engine is untouched")
		return 1
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	rep, err := admin.NewClient(cfg.Engine.Admin).Reload(rctx)
	if err != nil {
		fmt.Fprintf(stderr, "reload: %v\n", err)
		return 1
	}
	printPlugins(stdout, "after reload", admin.Report{Plugins: rep.Plugins})
	if !rep.OK {
		fmt.Fprintf(stderr, "reload: %s\n", rep.Error)
		return 1
	}
	return 0
}
