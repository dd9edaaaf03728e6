package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/microengine/microengine/host/admin"
	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/marketplace"
	"github.com/microengine/microengine/host/pluginmgr"
	"github.com/microengine/microengine/host/simulator"
)

// runEngine takes part in the marketplace until SIGINT/SIGTERM: plugins
// launched and supervised, webhooks in, answers out. It logs (and writes to
// DATA_DIR/listen.addr) the address it listens on, so listen =
// "127.0.0.1:0" works for tests.
func runEngine(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := newFlagSet("run", stderr, "run -config FILE")
	var cf configFlags
	cf.register(fs)
	grace := fs.Duration("shutdown-grace", 10*time.Second, "how long in-flight bounties may still be answered after SIGTERM")
	if err := fs.Parse(args); err != nil {
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
	mgr, diags := pluginmgr.New(ctx, cfg, log, pluginmgr.Options{})
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

	// The admin endpoint and the plugin watcher end with the marketplace.
	sideCtx, stopSide := context.WithCancel(context.Background())
	var side sync.WaitGroup
	defer side.Wait()
	defer stopSide()
	var store atomic.Pointer[marketplace.Store] // set once the marketplace opens it
	load := func() (*config.Config, hcl.Diagnostics) { return config.Load(cf.path) }
	reload := func(rctx context.Context) error { return mgr.ReloadFromDisk(rctx, load) }
	side.Add(1)
	go func() {
		defer side.Done()
		if err := admin.Serve(sideCtx, cfg.Engine.Admin, cf.path, adminEngine{mgr, reload, &store}, log.Named("admin")); err != nil {
			log.Error("admin endpoint stopped", "error", err)
		}
	}()
	if cfg.Engine.Swap != "reload" {
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

	err := marketplace.Run(ctx, marketplace.Options{
		Config:        cfg.Marketplace,
		DataDir:       cfg.Engine.DataDir,
		Scanner:       engine.New(mgr),
		Healthy:       mgr.Healthy,
		Registry:      reg,
		Logger:        log.Named("marketplace"),
		Version:       version,
		ShutdownGrace: *grace,
		OnStore:       store.Store,
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
	store  *atomic.Pointer[marketplace.Store]
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

// runBounties lists the stored bounties. bbolt locks the store while the
// engine runs, so the store is opened read-only with a short timeout and a
// running engine is reported as busy (its /metrics has the live counts).
func runBounties(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("bounties", stderr, "bounties -config FILE [-json] [-state STATE] [-limit N] [-oldest-first]")
	var cf configFlags
	cf.register(fs)
	dataDir := fs.String("data", "", "data directory holding bounties.db (default: engine.data_dir of -config)")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	state := fs.String("state", "", "only bounties in this state: open, answered, expired or failed")
	limit := fs.Int("limit", 0, "print at most N bounties (0: all)")
	oldest := fs.Bool("oldest-first", false, "list in id order from the oldest (default: newest first)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	enc := json.NewEncoder(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	if !*asJSON {
		fmt.Fprintln(tw, "ID\tPHASE\tSTATE\tVERDICT\tBID\tRECEIVED\tFINISHED\tPLUGINS\tREASON")
	}
	n := 0
	show := func(r marketplace.Record) bool {
		if *state != "" && string(r.State) != *state {
			return true
		}
		n++
		if *asJSON {
			_ = enc.Encode(r)
		} else {
			printBounty(tw, r)
		}
		return *limit <= 0 || n < *limit
	}
	err := listBounties(ctx, cf, *dataDir, !*oldest, show, stderr)
	if !*asJSON {
		tw.Flush()
	}
	if err != nil {
		fmt.Fprintf(stderr, "bounties: %v\n", err)
		return 1
	}
	return 0
}

// listBounties asks the running engine when there is one (it holds the
// store's lock), else reads the store directly.
func listBounties(ctx context.Context, cf configFlags, dataDir string, newestFirst bool, fn func(marketplace.Record) bool, stderr io.Writer) error {
	if dataDir == "" {
		cfg, ok := cf.load(stderr)
		if !ok {
			return errors.New("cannot read " + cf.path)
		}
		dataDir = cfg.Engine.DataDir
		var decodeErr error
		err := admin.NewClient(cfg.Engine.Admin).Bounties(ctx, !newestFirst, func(raw json.RawMessage) bool {
			var r marketplace.Record
			if decodeErr = json.Unmarshal(raw, &r); decodeErr != nil {
				return false
			}
			return fn(r)
		})
		if !errors.Is(err, admin.ErrNotRunning) {
			return errors.Join(err, decodeErr)
		}
	}
	path := filepath.Join(dataDir, marketplace.StoreFile)
	store, err := marketplace.OpenStoreReadOnly(path, 500*time.Millisecond)
	if err != nil {
		if errors.Is(err, marketplace.ErrStoreBusy) {
			return fmt.Errorf("%s is in use by a running engine; give -config so it can be asked", path)
		}
		return err
	}
	defer store.Close()
	return store.List(newestFirst, fn)
}

func printBounty(w io.Writer, r marketplace.Record) {
	verdict, bid := "-", "-"
	if r.Answer != nil {
		verdict = string(r.Answer.Verdict)
		if r.Answer.Bid != nil {
			bid = r.Answer.Bid.String()
		}
	}
	finished := "-"
	if !r.FinishedAt.IsZero() {
		finished = r.FinishedAt.Local().Format(time.RFC3339)
	}
	var plugins []string
	for _, p := range r.Plugins {
		if p.Supported {
			plugins = append(plugins, p.Name+"@"+p.Version)
		}
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Bounty.IDString(), r.Bounty.Phase, r.State, verdict, bid,
		r.ReceivedAt.Local().Format(time.RFC3339), finished, orDash(strings.Join(plugins, ",")), orDash(oneLine(r.Reason, 80)))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// markerFlags collects repeated -marker VERDICT:TEXT flags.
type markerFlags []string

func (m *markerFlags) String() string     { return strings.Join(*m, ",") }
func (m *markerFlags) Set(s string) error { *m = append(*m, s); return nil }

// runSimulate plays the marketplace against an engine and prints the
// scoreboard. The engine is found with -url, or from -config (the address
// a running engine wrote to DATA_DIR/listen.addr, else marketplace.listen;
// the secret is the first webhook_secret). Exit 0 when every bounty got a
// valid, on-time answer that was not wrong; 1 otherwise.
func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("simulate", stderr, "simulate (-url URL -secret SECRET | -config FILE) [-count N] [-rate R] [-expiry D] [-samples DIR] [-marker VERDICT:TEXT]... [-json]")
	configPath := fs.String("config", "", "engine.hcl of the engine to play against (gives -url and -secret)")
	url := fs.String("url", "", "the engine's webhook URL")
	secret := fs.String("secret", "", "the webhook secret")
	count := fs.Int("count", 20, "bounties to send")
	rate := fs.Float64("rate", 10, "bounties per second")
	expiry := fs.Duration("expiry", 10*time.Second, "each bounty's lifetime (expiration = sent + expiry)")
	fs.DurationVar(expiry, "timeout", 10*time.Second, "same as -expiry")
	samplesDir := fs.String("samples", "", "folder of samples: manifest.json, or malicious/ benign/ … subfolders (default: EICAR and clean files)")
	var markers markerFlags
	fs.Var(&markers, "marker", "add a sample holding TEXT that must get VERDICT, as VERDICT:TEXT (repeatable)")
	asJSON := fs.Bool("json", false, "print the scoreboard as JSON")
	insecure := fs.Bool("insecure", false, "do not verify the engine's TLS certificate")
	concurrency := fs.Int("concurrency", 64, "webhook requests in flight at most")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	opts := simulator.Options{URL: *url, Secret: *secret, Count: *count, Rate: *rate, Expiry: *expiry, Insecure: *insecure, Concurrency: *concurrency}
	if *configPath != "" && (opts.URL == "" || opts.Secret == "") {
		if err := fromConfig(*configPath, &opts, stderr); err != nil {
			fmt.Fprintf(stderr, "simulate: %v\n", err)
			return 2
		}
	}
	if opts.URL == "" || opts.Secret == "" {
		fmt.Fprintln(stderr, "simulate: give -url and -secret, or -config")
		fs.Usage()
		return 2
	}
	if *samplesDir != "" {
		s, err := simulator.LoadDir(*samplesDir)
		if err != nil {
			fmt.Fprintf(stderr, "simulate: %v\n", err)
			return 2
		}
		opts.Samples = s
	}
	if len(markers) > 0 {
		if opts.Samples == nil {
			opts.Samples = simulator.DefaultSamples()
		}
		for _, m := range markers {
			s, err := simulator.Marker(m)
			if err != nil {
				fmt.Fprintf(stderr, "simulate: %v\n", err)
				return 2
			}
			opts.Samples = append(opts.Samples, s)
		}
	}
	sb, err := simulator.Run(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "simulate: %v\n", err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(sb)
	} else {
		sb.WriteText(stdout)
	}
	if !sb.OK() {
		return 1
	}
	return 0
}

// fromConfig fills the engine's URL and secret from its engine.hcl.
func fromConfig(path string, opts *simulator.Options, stderr io.Writer) error {
	cf := configFlags{path: path}
	cfg, ok := cf.load(stderr)
	if !ok {
		return errors.New("cannot use " + path)
	}
	m := cfg.Marketplace
	if m == nil {
		return fmt.Errorf("%s has no marketplace block", path)
	}
	if opts.Secret == "" && len(m.WebhookSecrets) > 0 {
		opts.Secret = m.WebhookSecrets[0]
	}
	if opts.URL == "" {
		addr := m.Listen
		if b, err := os.ReadFile(filepath.Join(cfg.Engine.DataDir, marketplace.ListenAddrFile)); err == nil {
			addr = strings.TrimSpace(string(b))
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("marketplace.listen %q: %w", addr, err)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		scheme := "http"
		if m.TLSCert != "" {
			scheme = "https"
		}
		opts.URL = scheme + "://" + net.JoinHostPort(host, port) + "/"
	}
	return nil
}

var _ flag.Value = (*markerFlags)(nil)
