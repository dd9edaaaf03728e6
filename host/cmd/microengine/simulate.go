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
	"path/filepath"
	"strings"
	"time"

	"github.com/microengine/microengine/host/marketplace"
	"github.com/microengine/microengine/host/simulator"
)

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
	fs := newFlagSet("simulate", stderr, "simulate (-url URL -secret SECRET | -config FILE) [-count N] [-rate R] [-expiry D] [-samples DIR] [-marker VERDICT:TEXT]... [-dialect marketplace|polyswarm] [-json]")
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
	dialect := fs.String("dialect", "marketplace", "the bounties' form: marketplace, or polyswarm (the forms PolySwarm's own code sends, in turn)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	d, err := simulator.ParseDialect(*dialect)
	if err != nil {
		fmt.Fprintf(stderr, "simulate: %v\n", err)
		return 2
	}
	opts := simulator.Options{URL: *url, Secret: *secret, Count: *count, Rate: *rate, Expiry: *expiry, Insecure: *insecure, Concurrency: *concurrency, Dialect: d}
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
