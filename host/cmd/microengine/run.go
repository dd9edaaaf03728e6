package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/microengine/microengine/host/admin"
	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/marketplace"
	"github.com/microengine/microengine/host/pluginmgr"
)

// runEngine takes part in the marketplace until SIGINT/SIGTERM: plugins
// launched and supervised, webhooks in, answers out. It logs (and writes to
// DATA_DIR/listen.addr) the address it listens on, so listen =
// "127.0.0.1:0" works for tests.
func runEngine(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := newFlagSet("run", stderr, "run -config FILE [-role all|webhook|worker]")
	var cf configFlags
	cf.register(fs)
	grace := fs.Duration("shutdown-grace", marketplace.DefaultShutdownGrace, "how long in-flight bounties may still be answered after SIGTERM")
	roleFlag := fs.String("role", string(marketplace.RoleAll), "all: webhooks and scans; webhook: accept and store bounties only; worker: scan and answer (split roles need a queue block with servers)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	role, err := marketplace.ParseRole(*roleFlag)
	if err != nil {
		fmt.Fprintf(stderr, "run: -role: %v\n", err)
		return 2
	}
	cfg, ok := cf.load(stderr)
	if !ok {
		return 1
	}
	if cfg.Marketplace == nil {
		fmt.Fprintf(stderr, "run: %s has no marketplace block: nothing to take part in\n", cf.path)
		return 1
	}
	log := cf.loggerAt(cfg, stderr, "")
	mgr, diags := pluginmgr.New(ctx, cfg, log, pluginOptions(cfg))
	if diags.HasErrors() {
		_ = config.WriteDiagnostics(stderr, cfg.Files, diags)
		return 1
	}
	// Plugins stop last: after the marketplace has answered what it could.
	defer mgr.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := mgr.Register(reg); err != nil {
		fmt.Fprintf(stderr, "run: register plugin metrics: %v\n", err)
		return 1
	}
	eng := engine.New(mgr)
	cache := openVerdictCache(cfg, log)
	if cache != nil {
		eng.WithCache(cache, cfg.Cache.TrustBountySHA256)
		reg.MustRegister(cache.Collector())
		defer saveVerdictCache(cache, log)
	}

	// The admin endpoint and the plugin watcher end with the marketplace.
	sideCtx, stopSide := context.WithCancel(context.Background())
	var side sync.WaitGroup
	defer side.Wait()
	defer stopSide()
	var store atomic.Pointer[marketplace.JetStore] // set once the marketplace opens it
	load := func() (*config.Config, hcl.Diagnostics) { return config.Load(cf.path) }
	reload := func(rctx context.Context) error { return mgr.ReloadFromDisk(rctx, load) }
	side.Add(1)
	go func() {
		defer side.Done()
		if err := admin.Serve(sideCtx, cfg.Engine.Admin, cf.path, adminEngine{mgr, reload, &store}, log.Named("admin")); err != nil {
			log.Error("admin endpoint stopped", "error", err)
		}
	}()
	if cfg.Engine.Swap != config.SwapReload {
		side.Add(1)
		go func() {
			defer side.Done()
			if err := mgr.Watch(sideCtx, cf.path, load); err != nil {
				log.Error("plugin watcher stopped", "error", err)
			}
		}()
	}
	side.Add(1)
	go func() {
		defer side.Done()
		reloadOnHUP(sideCtx, reload, log)
	}()
	if cache != nil {
		side.Add(1)
		go func() {
			defer side.Done()
			saveVerdictCacheEvery(sideCtx, cache, cacheSaveInterval, log)
		}()
	}

	err = marketplace.Run(ctx, marketplace.Options{
		Config:        cfg.Marketplace,
		DataDir:       cfg.Engine.DataDir,
		Scanner:       eng,
		Healthy:       mgr.Healthy,
		Registry:      reg,
		Logger:        log.Named("marketplace"),
		Version:       version,
		ShutdownGrace: *grace,
		OnStore:       store.Store,
		Queue:         cfg.Queue,
		Role:          role,
	})
	if err != nil {
		fmt.Fprintf(stderr, "run: %v\n", err)
		return 1
	}
	return 0
}

// adminEngine adapts the manager and the bounty store to what the admin
// endpoint asks.
type adminEngine struct {
	*pluginmgr.Manager
	reload func(context.Context) error
	store  *atomic.Pointer[marketplace.JetStore]
}

func (a adminEngine) Reload(ctx context.Context) error { return a.reload(ctx) }

func (a adminEngine) ListBounties(newestFirst bool, fn func(any) bool) error {
	s := a.store.Load()
	if s == nil {
		return errors.New("the bounty store is not open yet")
	}
	return s.List(newestFirst, func(r marketplace.Record) bool { return fn(r) })
}

// reloadOnHUP re-reads engine.hcl on SIGHUP, the classic daemon way.
func reloadOnHUP(ctx context.Context, reload func(context.Context) error, log hclog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: reloading engine.hcl")
			if err := reload(ctx); err != nil {
				log.Error("reload refused; the running plugins are untouched", "error", err)
			}
		}
	}
}
