// Package queue connects the engine to NATS JetStream, where the bounty
// lifecycle is kept: the engine's own node, run in-process with file
// storage under data_dir and no listener (the default), or a cluster of
// nats-server machines shared by several engines.
package queue

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/microengine/microengine/host/config"
)

// StoreDir is the embedded node's folder under the data directory.
const StoreDir = "jetstream"

// ErrBusy means another process (a running engine) holds the embedded
// node's storage.
var ErrBusy = errors.New("the embedded JetStream node's storage is held by another process (is the engine running?)")

// readyTimeout bounds the embedded node's start; it is ready in 6-10 ms on
// a 2-core machine, longer when it replays a large store.
const readyTimeout = time.Minute

// Node is a connection to JetStream, and the embedded server when the
// engine runs its own.
type Node struct {
	Conn     *nats.Conn
	JS       jetstream.JetStream
	Replicas int

	srv           *server.Server
	lock          *os.File
	stop, stopped chan struct{} // the embedded node's reviver
	jsCfg         server.JetStreamConfig
	log           hclog.Logger

	healMu   sync.Mutex
	lastHeal time.Time
}

// Open starts the embedded node (cfg nil or without servers) under
// dataDir, or connects to cfg's servers. The embedded node takes an
// exclusive lock on its folder: a second process gets ErrBusy at once.
func Open(ctx context.Context, cfg *config.Queue, dataDir string, log hclog.Logger) (*Node, error) {
	if cfg == nil {
		d := config.DefaultQueue()
		cfg = &d
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if cfg.Embedded() {
		return openEmbedded(cfg, dataDir, log)
	}
	return connect(ctx, cfg, log)
}

func openEmbedded(cfg *config.Queue, dataDir string, log hclog.Logger) (*Node, error) {
	dir := filepath.Join(dataDir, StoreDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "engine.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the JetStream lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("open %s: %w", dir, ErrBusy)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	opts := &server.Options{
		ServerName: "microengine",
		JetStream:  true,
		StoreDir:   dir,
		// In-process only: nothing listens, so nothing outside the
		// engine can reach the node.
		DontListen: true,
		NoSigs:     true,
		NoLog:      true,
		// fsync before every acknowledgement (the default): a bounty
		// acknowledged with 202 survives a power loss. Measured 1.3k
		// writes/s on this machine's disk, against 12.6k/s flushed every
		// SyncInterval (2 min by default in nats-server).
		SyncAlways:   cfg.SyncAlways,
		SyncInterval: cfg.SyncInterval,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("configure the embedded JetStream node: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		lock.Close()
		return nil, fmt.Errorf("the embedded JetStream node in %s did not start within %s", dir, readyTimeout)
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Name("microengine"), nats.MaxReconnects(-1))
	if err != nil {
		srv.Shutdown()
		lock.Close()
		return nil, fmt.Errorf("connect to the embedded JetStream node: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		lock.Close()
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	log.Debug("embedded JetStream node started", "dir", dir, "sync_always", cfg.SyncAlways)
	n := &Node{Conn: nc, JS: js, Replicas: 1, srv: srv, lock: lock, stop: make(chan struct{}), stopped: make(chan struct{}), log: log,
		jsCfg: server.JetStreamConfig{StoreDir: dir, SyncAlways: cfg.SyncAlways, SyncInterval: cfg.SyncInterval}}
	// The limits JetStream derived at start (from the disk's size) are
	// kept for a restart: derived again on a full disk they would be
	// zero, and every write refused for "insufficient resources".
	if eff := srv.JetStreamConfig(); eff != nil {
		n.jsCfg.MaxStore, n.jsCfg.MaxMemory = eff.MaxStore, eff.MaxMemory
	}
	go n.revive(n.jsCfg, log)
	return n, nil
}

// reviveInterval is how often a node whose JetStream stopped is restarted.
const reviveInterval = 500 * time.Millisecond

// revive restarts the embedded node's JetStream when it stopped itself: a
// full disk makes nats-server shut JetStream down ("out of resources"),
// expecting an operator to restart it. The engine's writes fail (and are
// retried) meanwhile; once space is free JetStream comes back with what
// it had committed, and the retried writes land.
func (n *Node) revive(cfg server.JetStreamConfig, log hclog.Logger) {
	defer close(n.stopped)
	tick := time.NewTicker(reviveInterval)
	defer tick.Stop()
	down := false
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if n.srv.JetStreamEnabled() {
			continue
		}
		if !down {
			log.Error("the embedded JetStream node stopped (is the disk full?): restarting it until it runs", "dir", cfg.StoreDir)
			down = true
		}
		n.healMu.Lock()
		c := cfg
		err := n.srv.EnableJetStream(&c)
		n.healMu.Unlock()
		if err != nil {
			continue
		}
		log.Info("the embedded JetStream node runs again", "dir", cfg.StoreDir)
		down = false
	}
}

func connect(ctx context.Context, cfg *config.Queue, log hclog.Logger) (*Node, error) {
	opts := []nats.Option{
		nats.Name("microengine"),
		// A server that restarts, or a whole cluster, is waited for: the
		// engine keeps answering 503 to webhooks meanwhile.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from the NATS server", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to the NATS cluster", "server", nc.ConnectedUrlRedacted())
		}),
	}
	if cfg.Credentials != "" {
		opts = append(opts, nats.UserCredentialBytes([]byte(cfg.Credentials)))
	}
	if cfg.TLSCA != "" || cfg.TLSCert != "" {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	url := strings.Join(cfg.Servers, ",")
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to the NATS cluster %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	if err := awaitJetStream(ctx, js, log); err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream on %s: %w", url, err)
	}
	log.Info("connected to the NATS cluster", "server", nc.ConnectedUrlRedacted(), "replicas", cfg.Replicas)
	return &Node{Conn: nc, JS: js, Replicas: max(1, cfg.Replicas), log: log}, nil
}

// awaitJetStream waits for the cluster's JetStream to answer, until ctx
// ends (the engine's start bound). A node restarted while its cluster
// elects a leader, or a cluster mid-election, drops JetStream requests or
// answers "not available" for seconds — until 12.6 s into a run with
// kills, measured under load —, and an engine started then failed its
// start after one request instead of joining once the cluster was back.
func awaitJetStream(ctx context.Context, js jetstream.JetStream, log hclog.Logger) error {
	wait := ElectionWait
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	warned := false
	return retry(ctx, wait, clusterAttempt, nil, func(ctx context.Context) error {
		_, err := js.AccountInfo(ctx)
		if err != nil && !warned {
			log.Warn("JetStream does not answer yet: waiting for the cluster", "error", err)
			warned = true
		}
		return err
	}, nil)
}

func tlsConfig(cfg *config.Queue) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("queue.tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("queue.tls_ca: no certificate in %s", cfg.TLSCA)
		}
		tc.RootCAs = pool
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("queue.tls_cert: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Embedded reports whether the node runs in this process.
func (n *Node) Embedded() bool { return n.srv != nil }

// Dir is the embedded node's folder ("" for a cluster's).
func (n *Node) Dir() string { return n.jsCfg.StoreDir }

// Close drains the connection and stops the embedded node, which flushes
// its storage.
func (n *Node) Close() error {
	if n.stop != nil {
		close(n.stop)
		<-n.stopped
	}
	if n.Conn != nil {
		n.Conn.Close()
	}
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
	if n.lock != nil {
		n.lock.Close()
	}
	return nil
}

// Retry bounds: leader elections in a 3-node cluster stalled writes for
// 4.8-7.2 s here, and acks and reads failed fast with "no responders" for
// ~2.5 s. A write is retried with the same content (and, for creates, the
// same key) until it lands or ElectionWait has passed.
const (
	ElectionWait = 12 * time.Second
	minBackoff   = 25 * time.Millisecond
	maxBackoff   = 500 * time.Millisecond
)

// An embedded node has no elections: a write it does not answer within
// embeddedAttempt is stuck, not waiting for a leader, and is given up
// after embeddedWait (the caller retries on its own terms).
const (
	clusterAttempt  = 5 * time.Second
	embeddedAttempt = 2 * time.Second
	embeddedWait    = 3 * time.Second
)

// Retry runs op until it succeeds, fails with an error permanent says is
// final, ctx ends, or ElectionWait has passed. It backs off between
// attempts rather than spinning while the cluster elects a leader.
func Retry(ctx context.Context, permanent func(error) bool, op func(ctx context.Context) error) error {
	return retry(ctx, ElectionWait, clusterAttempt, permanent, op, nil)
}

// Retry is the package's Retry, bounded for this node: an embedded node
// whose write timed out has its JetStream restarted (see heal).
func (n *Node) Retry(ctx context.Context, permanent func(error) bool, op func(ctx context.Context) error) error {
	if n.srv == nil {
		return Retry(ctx, permanent, op)
	}
	return retry(ctx, embeddedWait, embeddedAttempt, permanent, op, n.heal)
}

// JetStream's refusals to place a stream's replicas: no suitable peers
// (10005, "no suitable peers for placement", with why: "peer offline",
// "insufficient storage") and insufficient resources (10023). nats.go
// names neither.
const (
	errCodeNoPeers               = jetstream.ErrorCode(10005)
	errCodeInsufficientResources = jetstream.ErrorCode(10023)
)

// Unplaced reports whether err is JetStream refusing to place a stream's
// replicas. A cluster still forming answers so: its meta leader is
// elected, and answers requests, before it has heard from every peer, and
// a stream asking for more replicas than the peers it knows online is
// refused until they have joined. It says so for a cluster too small for
// the replicas too, which no wait mends: the caller bounds its wait.
func Unplaced(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == errCodeNoPeers || apiErr.ErrorCode == errCodeInsufficientResources
}

// RetryStart is Retry for the engine's start, which creates its streams:
// on a cluster, ctx's deadline (the start's bound) ends it rather than
// ElectionWait. A cluster started beside the engine (one compose file, a
// whole cluster restarted) takes connections and elects its meta leader
// before all its peers have joined, and refuses a stream with as many
// replicas as servers ("no suitable peers for placement") until they
// have: an engine started then failed its start after one such answer.
// The first refusal is logged, so that a cluster too small for the
// replicas is told apart from a slow one before the start gives up.
func (n *Node) RetryStart(ctx context.Context, permanent func(error) bool, op func(ctx context.Context) error) error {
	if n.srv != nil {
		return n.Retry(ctx, permanent, op)
	}
	wait := ElectionWait
	if d, ok := ctx.Deadline(); ok {
		wait = max(wait, time.Until(d))
	}
	warned := false
	return retry(ctx, wait, clusterAttempt, permanent, func(ctx context.Context) error {
		err := op(ctx)
		if !warned && Unplaced(err) && n.log != nil {
			n.log.Warn("JetStream cannot place the replicas yet: waiting for the cluster's servers to join (replicas must not outnumber them)",
				"replicas", n.Replicas, "error", err)
			warned = true
		}
		return err
	}, nil)
}

func retry(ctx context.Context, wait, attempt time.Duration, permanent func(error) bool, op func(ctx context.Context) error, onTimeout func()) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	backoff := minBackoff
	for {
		actx, acancel := context.WithTimeout(ctx, attempt)
		err := op(actx)
		timedOut := actx.Err() != nil && ctx.Err() == nil
		acancel()
		if err == nil || (permanent != nil && permanent(err)) {
			return err
		}
		if timedOut && onTimeout != nil {
			onTimeout()
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (retried for %s)", err, wait)
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// healInterval bounds how often an embedded node's JetStream is restarted.
const healInterval = 2 * time.Second

// heal restarts the embedded node's JetStream, at most every
// healInterval. A write that fails on a full disk leaves nats-server's file
// store with a "critical write error" that fails every later write without
// an answer, even once space is free, until the stream is loaded again;
// restarting JetStream reloads every stream from what it had committed.
func (n *Node) heal() {
	n.healMu.Lock()
	defer n.healMu.Unlock()
	if time.Since(n.lastHeal) < healInterval {
		return
	}
	n.lastHeal = time.Now()
	n.log.Warn("the embedded JetStream node does not answer writes (is the disk full?): restarting it")
	if err := n.srv.ShutdownJetStream(); err != nil {
		n.log.Error("cannot stop the embedded JetStream node", "error", err)
	}
	c := n.jsCfg
	if err := n.srv.EnableJetStream(&c); err != nil {
		n.log.Error("cannot restart the embedded JetStream node: retrying", "error", err)
	}
}
