package marketplace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/marketplace/bountiesdb"
	"github.com/microengine/microengine/host/queue"
)

// Scanner is what the marketplace needs of the engine: *engine.Engine, or a
// fake in tests. Scan must honour ctx's deadline and never fail: faults are
// an unknown Result.
type Scanner interface {
	Scan(ctx context.Context, a engine.Artifact) engine.Result
}

// ScanFunc adapts a function to Scanner.
type ScanFunc func(ctx context.Context, a engine.Artifact) engine.Result

// Scan calls f.
func (f ScanFunc) Scan(ctx context.Context, a engine.Artifact) engine.Result { return f(ctx, a) }

// DefaultShutdownGrace is Options.ShutdownGrace when unset, and the
// default of `microengine run -shutdown-grace`.
const DefaultShutdownGrace = 10 * time.Second

// Options configure a Service.
type Options struct {
	// Config is the marketplace block; zero fields take their defaults
	// (config.Marketplace.WithDefaults). Build one in code from
	// config.DefaultMarketplace.
	Config *config.Marketplace
	// DataDir holds the embedded JetStream node (jetstream/), tmp/
	// (downloads) and listen.addr.
	DataDir string
	Scanner Scanner
	// Healthy backs /healthz (503 when false). Nil: always healthy.
	Healthy func() bool
	// Registry receives the metrics, served on /metrics at metrics_listen.
	// Nil: a private registry.
	Registry *prometheus.Registry
	Logger   hclog.Logger
	// Version is the host's version, sent as metadata.scanner.version.
	Version string
	// ShutdownGrace bounds how long in-flight and queued bounties may
	// still be answered after shutdown begins (default
	// DefaultShutdownGrace). What is not done by then stays open in the
	// store and is resumed at next start.
	ShutdownGrace time.Duration
	// HTTPClient downloads artifacts and posts answers; its redirect
	// policy is replaced (answers never follow one, downloads follow
	// max_redirects, never from a public to an internal address). Nil: a
	// default client. Tests pass their server's client.
	HTTPClient *http.Client
	// OnStore is called by Run with the open bounty store, so the admin
	// endpoint can list bounties while the engine holds the store's lock.
	OnStore func(*JetStore)
	// Queue is where the bounty lifecycle is kept: NATS JetStream, the
	// cluster it names, or (nil, or no servers) the engine's own node,
	// embedded, with its files under DataDir.
	Queue *config.Queue
	// Role is what this engine does: RoleAll (default), RoleWebhook
	// (accept and store bounties only) or RoleWorker (scan and answer the
	// stored ones, no webhook listener). Split roles need a shared Queue.
	Role Role
	// OnListen is called by Run with the address actually listened on
	// (useful with listen = "127.0.0.1:0").
	OnListen func(addr string)
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Service is one marketplace participant: the webhook handler, the store,
// the workers. Run drives it; tests use New, Handler, Start and Stop.
type Service struct {
	cfg     config.Marketplace
	opts    Options
	log     hclog.Logger
	now     func() time.Time
	store   *JetStore
	move    *bountiesMove // the rest of an older version's bounties.db, moved in by Start
	filters *Filters
	fetcher *fetcher
	poster  *poster
	metrics *metrics
	reg     *prometheus.Registry

	bodies *bodyPool // webhook body buffers; bounds the bodies read at once

	queue chan task // to the scanning workers
	quick chan task // to the posters of early unknown answers

	inflightMu sync.Mutex
	inflight   map[string]*claim // queued, being processed or being delivered

	scanEWMA atomic.Int64 // recent fetch+scan time, ns: predicts whether a scan can finish

	sweepFrom  []byte // where the janitor's next sweep starts (janitor goroutine only)
	sweepBatch int    // open bounties one sweep takes in hand (defaultSweepBatch)

	inlineBudget time.Duration // a cached answer's POST while its webhook waits (inlinePostBudget)

	hardCtx    context.Context // cancelled when the shutdown grace is over
	hardCancel context.CancelFunc
	drain      chan struct{} // closed when shutdown begins
	wg         sync.WaitGroup
	startOnce  sync.Once
	stopOnce   sync.Once
}

type task struct {
	key string
	b   Bounty
	c   *claim // set by dispatch
}

// New opens the store and builds the service. Nothing runs until Start.
func New(opts Options) (*Service, error) {
	if opts.Config == nil {
		return nil, errors.New("marketplace: no marketplace block in the configuration")
	}
	if opts.Scanner == nil {
		return nil, errors.New("marketplace: no scanner")
	}
	if opts.DataDir == "" {
		return nil, errors.New("marketplace: no data directory")
	}
	cfg := opts.Config.WithDefaults()
	if len(cfg.WebhookSecrets) == 0 {
		return nil, errors.New("marketplace: no webhook secret: every delivery must be verified")
	}
	for _, sec := range cfg.WebhookSecrets {
		if sec == "" {
			return nil, errors.New("marketplace: an empty webhook secret would verify nothing")
		}
	}
	filters, err := NewFilters(cfg.Filters)
	if err != nil {
		return nil, fmt.Errorf("marketplace: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Role == "" {
		opts.Role = RoleAll
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = DefaultShutdownGrace
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	tmp := filepath.Join(opts.DataDir, "tmp")
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return nil, fmt.Errorf("marketplace: create %s: %w", tmp, err)
	}
	removeLeftovers(tmp, opts.Logger)
	fetch := &fetcher{tmpDir: tmp, maxSize: cfg.MaxArtifactSize, maxRedirects: cfg.MaxRedirects}
	client := opts.HTTPClient
	if client == nil {
		client = newHTTPClient(fetch.guardedDial)
	}
	fetch.client = fetch.downloadsClient(client)

	s := &Service{
		cfg: cfg, opts: opts, log: opts.Logger, now: opts.Now, filters: filters, reg: opts.Registry,
		fetcher:  fetch,
		poster:   &poster{client: answersClient(client), minBackoff: 100 * time.Millisecond, maxBackoff: 2 * time.Second, attemptTimeout: 10 * time.Second},
		bodies:   newBodyPool(cfg.MaxWebhooksInFlight, cfg.MaxBodySize),
		queue:    make(chan task, cfg.QueueSize),
		quick:    make(chan task, cfg.QueueSize),
		inflight: map[string]*claim{},
		drain:    make(chan struct{}),

		sweepBatch:   defaultSweepBatch,
		inlineBudget: inlinePostBudget,
	}
	s.hardCtx, s.hardCancel = context.WithCancel(context.Background())
	s.metrics, err = newMetrics(opts.Registry,
		func() float64 { return float64(len(s.queue)) },
		func() float64 { s.inflightMu.Lock(); defer s.inflightMu.Unlock(); return float64(len(s.inflight)) })
	if err != nil {
		return nil, fmt.Errorf("marketplace: register metrics: %w", err)
	}
	s.store, s.move, err = openLifecycle(opts, cfg)
	if err != nil {
		return nil, fmt.Errorf("marketplace: %w", err)
	}
	return s, nil
}

// Role is what an engine does in the bounty lifecycle.
type Role string

// The roles of `microengine run -role`.
const (
	RoleAll     Role = "all"
	RoleWebhook Role = "webhook"
	RoleWorker  Role = "worker"
)

// ParseRole reads a -role value.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAll, RoleWebhook, RoleWorker:
		return r, nil
	case "":
		return RoleAll, nil
	}
	return "", fmt.Errorf("unknown role %q (want all, webhook or worker)", s)
}

func (r Role) webhooks() bool { return r != RoleWorker }
func (r Role) works() bool    { return r != RoleWebhook }

// openStoreTimeout bounds connecting to a cluster and creating its buckets
// at start.
const openStoreTimeout = time.Minute

// openLifecycle opens JetStream: the cluster, or the embedded node, into
// which the open bounties of a bounties.db left by an earlier version are
// moved first; the rest of the file is what the move returned holds.
func openLifecycle(opts Options, cfg config.Marketplace) (*JetStore, *bountiesMove, error) {
	q := opts.Queue
	if q == nil {
		d := config.DefaultQueue()
		q = &d
	}
	if q.Embedded() && opts.Role != RoleAll {
		return nil, nil, fmt.Errorf("role %s needs queue servers: the embedded node is this engine's alone", opts.Role)
	}
	ctx, cancel := context.WithTimeout(context.Background(), openStoreTimeout)
	defer cancel()
	node, err := queue.Open(ctx, q, opts.DataDir, opts.Logger.Named("queue"))
	if err != nil {
		return nil, nil, err
	}
	st, err := openJetStore(ctx, node, cfg.Retention, cfg.RecordGrace, opts.Logger.Named("queue"))
	if err != nil {
		node.Close()
		return nil, nil, err
	}
	st.PreclaimStored(opts.Role.works())
	if !q.Embedded() {
		if id, err := holderID(opts.DataDir); err != nil {
			opts.Logger.Warn("cannot keep this engine's claim name in its data directory: a restart waits for the claims it held to lapse", "error", err)
		} else {
			st.HoldAs(id)
		}
		st.RescueWithin(cfg.SafetyMargin)
	}
	move, err := startBountiesMove(filepath.Join(opts.DataDir, bountiesdb.File), st, opts.Now(), opts.Logger)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, move, nil
}

// holderFile keeps an engine's claim holder name across restarts.
const holderFile = "engine.id"

// holderID is the claim holder name of the engine on dataDir: the host's
// name and a random id made once and kept in dataDir. Two engines never
// share a data directory (its verdict cache, its admin socket).
func holderID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, holderFile)
	raw, err := os.ReadFile(path)
	id := strings.TrimSpace(string(raw))
	if err != nil || len(id) == 0 {
		b := make([]byte, 8)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("make the engine id: %w", err)
		}
		id = hex.EncodeToString(b)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("keep the engine id: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return "", fmt.Errorf("keep the engine id: %w", err)
		}
	}
	host, _ := os.Hostname()
	return host + "-" + id, nil
}

// removeLeftovers deletes downloads a crash left behind: their bounties are
// still open in the store and will be fetched again.
func removeLeftovers(dir string, log hclog.Logger) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "artifact-") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				log.Warn("cannot remove a leftover download", "file", e.Name(), "error", err)
			}
		}
	}
}

// Store is the service's bounty store.
func (s *Service) Store() *JetStore { return s.store }

// Start launches the workers, the early-answer posters and the janitor,
// which resumes every stored bounty that is still open.
func (s *Service) Start() {
	s.startOnce.Do(func() {
		if s.move != nil {
			s.wg.Add(1)
			go s.finishBountiesMove()
		}
		if !s.opts.Role.works() {
			return // a webhook node only stores: the workers answer
		}
		for range s.cfg.Workers {
			s.wg.Add(1)
			go s.worker(s.queue, true)
		}
		for range max(2, s.cfg.Workers) {
			s.wg.Add(1)
			go s.worker(s.quick, false)
		}
		s.wg.Add(2)
		go s.janitor()
		go s.watchDeadlines()
	})
}

// Stop begins the shutdown: no more resuming, the workers finish what is
// queued within the grace, then whatever is left is abandoned (it stays
// open in the store) and the store is closed. Call it after the HTTP
// server has stopped taking webhooks.
func (s *Service) Stop() error {
	var err error
	s.stopOnce.Do(func() {
		close(s.drain)
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		grace := time.NewTimer(s.opts.ShutdownGrace)
		defer grace.Stop()
		select {
		case <-done:
		case <-grace.C:
			s.log.Warn("shutdown grace is over: abandoning in-flight bounties; they stay open and are resumed at next start",
				"in_flight", s.inFlightCount())
			s.hardCancel()
			<-done
		}
		s.hardCancel()
		if s.move != nil {
			s.move.close()
		}
		err = s.store.Close()
	})
	return err
}

func (s *Service) inFlightCount() int {
	s.inflightMu.Lock()
	defer s.inflightMu.Unlock()
	return len(s.inflight)
}
