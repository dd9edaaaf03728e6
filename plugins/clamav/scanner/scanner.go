// Package scanner is the clamav plugin's Scanner: it streams each artifact
// to clamd with INSTREAM and maps clamd's answer to a marketplace verdict.
//
// The mapping never turns a fault into benign. Only "stream: OK" for a
// stream that was sent whole is benign; a signature match is malicious;
// a scan limit clamd hit (Heuristics.Limits.Exceeded.*), encrypted content
// (Heuristics.Encrypted.*), a size limit, a timeout, a daemon that is down
// or dies mid-stream, a malformed reply — all are unknown, with the reason
// in Result.Reason and the log. An OK is benign only from a clamd that can
// be trusted with it: one that alerts on what it skips (the plugin's own,
// or one that passed the probes; see probe.go), whose signatures are not
// older than max_signature_age and are not being reloaded.
//
// The clamds are a pool (backend.go): the plugin's own managed clamd
// (package daemon), or one or more addresses, each checked in the
// background; a scan goes to the least busy one that answers, and is
// retried on another when its clamd fails before answering.
//
// Artifact types: files only. A URL's text is no file, and clamd has no URL
// reputation to judge it by: it would answer OK, a benign claim about a URL
// it never examined. Declaring `file` alone lets the host answer URL
// bounties unknown on its own, and lets a URL-capable plugin's verdict
// stand unopposed.
package scanner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/plugins/clamav/clamd"
	"github.com/microengine/microengine/plugins/clamav/daemon"
	"github.com/microengine/microengine/shared"
)

// Name is the plugin's name.
const Name = "clamav"

// Version is the plugin's semantic version. It is a variable, not a
// constant, so that release builds can set it:
//
//	go build -ldflags "-X github.com/microengine/microengine/plugins/clamav/scanner.Version=0.2.0"
var Version = "0.1.0"

// Vendor is the backend's product name, as clamd's VERSION reports it.
const Vendor = "ClamAV"

// Metadata keys in Result.Metadata that the host reads.
const (
	MetaVendorVersion     = "vendor_version"
	MetaSignaturesVersion = "signatures_version"
)

// Alerts that say clamd did not examine the whole artifact. Neither is a
// verdict: the artifact is unknown, with the comment PolySwarm defines for
// the reason.
const (
	// limitsSignaturePrefix: clamd stopped at a scan limit (MaxFileSize,
	// MaxScanSize, MaxScanTime, MaxRecursion, MaxFiles...); raised with
	// AlertExceedsMax.
	limitsSignaturePrefix = "Heuristics.Limits.Exceeded"
	// encryptedSignaturePrefix: an encrypted archive or document clamd
	// could not open (Heuristics.Encrypted.Zip, .RAR, .PDF...); raised with
	// AlertEncrypted, AlertEncryptedArchive and AlertEncryptedDoc.
	encryptedSignaturePrefix = "Heuristics.Encrypted"
)

// heuristicsPrefix names clamd's heuristic (non-signature) alerts.
const heuristicsPrefix = "Heuristics."

// Tuning that is not configuration.
const (
	// versionRefreshInterval: VERSION is re-asked this often by the
	// background checks, so a database update shows in results within a
	// minute without a VERSION call per scan.
	versionRefreshInterval = time.Minute
	// retryBackoff is the pause before the one retry of a scan whose
	// connection was refused (clamd restarting, listen queue full), when
	// there is no other clamd to try; the clamd client makes it.
	retryBackoff = 200 * time.Millisecond
	// retryBufferMax: with more than one clamd, artifacts up to this size
	// are read whole before they are sent, so a clamd that fails mid-scan
	// can be replaced by another. Larger ones are retried only when the
	// failure came before any byte was read, or when their content can
	// seek back.
	retryBufferMax = 1 << 20
	// managedStartWait bounds how long Configure waits for the managed
	// clamd's first PONG: enough for a small database (0.2 s), so a
	// one-shot `microengine scan` gets verdicts; the official database
	// takes 10-15 s, and scans answer unknown until it is loaded.
	managedStartWait = 5 * time.Second
	// infoVersionTimeout bounds the VERSION call Info makes when no
	// version is known yet: Info must stay cheap with clamd down.
	infoVersionTimeout = 2 * time.Second
	// healthBudget bounds a health check (see Health). PING answers in
	// well under a millisecond from a live clamd, even a busy one; the
	// host's deadline for the call is 10 s.
	healthBudget = 2 * time.Second
	// healthProbeWait bounds how long a health check waits for probes
	// under way: the cheap ones take milliseconds.
	healthProbeWait = time.Second
)

// Scanner implements shared.Scanner on top of clamd. Its zero value is not
// usable: call New.
type Scanner struct {
	log hclog.Logger
	// configMu serialises Configure; scans never take it.
	configMu sync.Mutex
	// current is swapped whole by Configure: a scan runs to its end on the
	// state it started with.
	current atomic.Pointer[state]
	// probes are built once, on first use.
	probesOnce sync.Once
	probeSet   []probe
	probeErr   error
	cacheOnce  sync.Once
	cache      *probeCache
	// zipBufs holds buffers small files are read back into for their zip
	// headers (see zipSkipped).
	zipBufs sync.Pool
	// now is the clock, for signature ages.
	now func() time.Time
	// retryBackoff is the pause before retrying a refused connection to
	// a lone clamd (the constant retryBackoff; tests lengthen it so that
	// what happens during the pause does not hang on the machine's load).
	retryBackoff time.Duration
}

// state is one configuration and what was built from it.
type state struct {
	cfg      Config
	backends []*backend
	// daemon is the managed clamd, when cfg.Database is set. ownsDaemon
	// is cleared when a later state takes it over.
	daemon     *daemon.Daemon
	ownsDaemon atomic.Bool
	// slots is a semaphore of MaxConnections tokens.
	slots chan struct{}
	// pipeSlots is a semaphore of pipeDepth tokens, for artifacts by
	// reference.
	pipeSlots chan struct{}
	// stop ends the background checks and probes.
	stop     chan struct{}
	stopOnce sync.Once
	// monitored is set once the background checks run; the defaults New
	// starts with are not checked until Configure confirms them.
	monitored atomic.Bool
}

var _ shared.Scanner = (*Scanner)(nil)

// New returns a scanner with the default configuration.
func New(log hclog.Logger) *Scanner {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	s := &Scanner{log: log, now: time.Now, retryBackoff: retryBackoff}
	st, err := s.newState(DefaultConfig(), nil, false)
	if err != nil {
		// The defaults are constants that parse: this is a programming error.
		panic(fmt.Sprintf("clamav: default config: %v", err))
	}
	s.current.Store(st)
	return s
}

func (s *Scanner) probes() ([]probe, error) {
	s.probesOnce.Do(func() { s.probeSet, s.probeErr = buildProbes() })
	return s.probeSet, s.probeErr
}

// probeCache is where probe findings are kept between plugin processes;
// nil when there is no private folder for it.
func (s *Scanner) probeCache() *probeCache {
	s.cacheOnce.Do(func() { s.cache = newProbeCache() })
	return s.cache
}

func (s *Scanner) newState(cfg Config, prev *state, monitor bool) (_ *state, err error) {
	st := &state{cfg: cfg, stop: make(chan struct{})}
	if prev != nil && prev.cfg.MaxConnections == cfg.MaxConnections {
		// Keep the semaphore, so scans in flight still count against
		// the same limit.
		st.slots = prev.slots
	} else {
		st.slots = make(chan struct{}, cfg.MaxConnections)
	}
	if prev != nil && prev.pipeSlots != nil && cap(prev.pipeSlots) == pipeDepth(cfg) {
		st.pipeSlots = prev.pipeSlots
	} else {
		st.pipeSlots = make(chan struct{}, pipeDepth(cfg))
	}
	opts := clamd.Options{
		Timeout:       cfg.Timeout,
		MaxStreamSize: int64(cfg.MaxStreamSize),
		// One kept session per connection a scan may hold.
		Sessions: cfg.MaxConnections,
	}
	if len(cfg.Address) <= 1 {
		// With a pool, a refused connection moves to another clamd
		// instead of waiting for this one.
		opts.RetryBackoff = s.retryBackoff
	}
	if cfg.Managed() {
		if prev != nil && prev.daemon != nil && sameDaemon(prev.cfg, cfg) && prev.ownsDaemon.CompareAndSwap(true, false) {
			st.daemon = prev.daemon
		} else if st.daemon, err = daemon.Start(daemon.Options{
			Database:        cfg.Database,
			StreamMaxLength: int64(cfg.MaxStreamSize),
			// Room for the health checks beside max_connections scans.
			MaxThreads: cfg.MaxConnections + 2,
			// The host gives a plugin 2 s to exit once asked to, then
			// kills it (and clamd with it, but not clamd's folder).
			StopGrace: time.Second,
			Logger:    s.log.Named("clamd"),
		}); err != nil {
			return nil, (&shared.ConfigError{}).Add(keyDatabase, "%v", err)
		}
		st.ownsDaemon.Store(true)
		client, err := clamd.NewClient(st.daemon.Address(), opts)
		if err != nil {
			st.close()
			return nil, err
		}
		st.backends = []*backend{newBackend(st.daemon.Address(), client, st.daemon, s.log)}
	}
	for _, addr := range cfg.Address {
		client, err := clamd.NewClient(addr, opts)
		if err != nil {
			st.close()
			return nil, (&shared.ConfigError{}).Add(keyAddress, "%v", err)
		}
		st.backends = append(st.backends, newBackend(client.Address().String(), client, nil, s.log))
	}
	if monitor {
		// Configure checks every clamd of st itself once it is in
		// place: the monitor's first round would be a second PING and
		// VERSION to each at the same moment (two of the six clamd
		// connections of a one-file scan's start).
		st.startMonitor(s, false)
	}
	return st, nil
}

// pipeDepth is how many artifacts by reference may be under way at once.
// Their FILDES commands queue on the one pipe (see clamd's pipe.go)
// rather than each holding a connection, so more of them than clamd has
// threads keeps clamd's threads busy: each takes the next command waiting
// instead of sleeping until the next one comes. With max_connections (8)
// in flight on a clamd of 10 threads, clamd woke an idle thread for most
// commands (4,000 × 4 KiB files on 2 cores: 11,000-14,000 context
// switches in clamd, 3,400 of its thread wakeups a dispatch); with 32,
// 4,100-6,900, clamd's CPU 5-10% lower and the run 10-15% shorter (64
// did no better). Four times max_connections, at most pipeDepthMax: well
// within clamd's MaxQueue (100 by default), past which clamd stops
// reading commands, PING included.
func pipeDepth(cfg Config) int {
	return max(cfg.MaxConnections, min(4*cfg.MaxConnections, pipeDepthMax))
}

const pipeDepthMax = 32

// startMonitor starts the background checks, once: at once when now is
// set, else after monitorInterval.
func (st *state) startMonitor(s *Scanner, now bool) {
	if st.monitored.CompareAndSwap(false, true) {
		go s.monitor(st, now)
	}
}

// sameDaemon reports whether a managed clamd started for a can serve b.
func sameDaemon(a, b Config) bool {
	return a.Database == b.Database && a.MaxStreamSize == b.MaxStreamSize && a.MaxConnections == b.MaxConnections
}

// close stops the state's background work, its connections and, when it
// still owns it, the managed clamd.
func (st *state) close() {
	st.stopOnce.Do(func() { close(st.stop) })
	for _, b := range st.backends {
		b.client.Close()
	}
	if st.daemon != nil && st.ownsDaemon.CompareAndSwap(true, false) {
		// clamd finishes the scans it holds before it exits (up to
		// daemon's grace): Configure does not wait for that.
		go st.daemon.Close()
	}
}

// monitor checks every clamd of st each monitorInterval until st is
// replaced, the first time at once when now is set.
func (s *Scanner) monitor(st *state, now bool) {
	t := time.NewTicker(monitorInterval)
	defer t.Stop()
	for {
		if now {
			s.checkAll(context.Background(), st, pingTimeout)
		}
		now = true
		select {
		case <-st.stop:
			return
		case <-t.C:
		}
	}
}

// checkAll checks every clamd of st at once, each within timeout.
func (s *Scanner) checkAll(ctx context.Context, st *state, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, b := range st.backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.check(ctx)
		}()
	}
	wg.Wait()
}

// Close stops the background checks and the managed clamd, waiting for
// it to exit and its folder to be removed. The plugin's main calls it once
// the host has asked the plugin to exit.
func (s *Scanner) Close() {
	s.configMu.Lock()
	defer s.configMu.Unlock()
	st := s.current.Load()
	st.close()
	if st.daemon != nil {
		st.daemon.Close()
	}
}

// pickUntried returns the usable clamd with the fewest scans in flight
// among those not in tried (nil: none); nil when none is usable.
func (st *state) pickUntried(tried map[*backend]bool) *backend {
	var best *backend
	for _, b := range st.backends {
		if tried[b] || !b.usable() {
			continue
		}
		if best == nil || b.inflight.Load() < best.inflight.Load() {
			best = b
		}
	}
	return best
}

// Info describes the plugin. Versions come from the last checks; only when
// none is known yet does Info ask clamd, briefly, and it still answers if
// clamd is down.
func (s *Scanner) Info(ctx context.Context) (shared.Info, error) {
	st := s.current.Load()
	vctx, cancel := withBudget(ctx, infoVersionTimeout)
	defer cancel()
	v := st.versions(vctx)
	return shared.Info{
		Name:              Name,
		Version:           Version,
		Vendor:            Vendor,
		VendorVersion:     v.Engine,
		SignaturesVersion: v.Database,
		ArtifactTypes:     []shared.ArtifactType{shared.ArtifactFile},
		// An artifact by reference goes to clamd as its descriptor
		// (FILDES) when clamd is on a unix socket, else streamed from it.
		ByReference:  true,
		ConfigSchema: ConfigSchema(),
		Samples:      Samples(),
		HasBackend:   true,
	}, nil
}

// versions returns the first clamd's versions that are known, asking the
// first clamd within ctx when none is.
func (st *state) versions(ctx context.Context) clamd.Version {
	for _, b := range st.backends {
		if snap := b.snapshot(); snap.versionOK {
			return snap.version
		}
	}
	if len(st.backends) == 0 || (st.backends[0].managed != nil && !st.backends[0].usable()) {
		return clamd.Version{}
	}
	v, _ := st.backends[0].versions(ctx)
	return v
}

// Configure applies a config block. It is idempotent (the same config
// changes nothing) and safe during scans: a new configuration is swapped in
// whole, and scans in flight finish on the one they started with. With
// database set it starts the managed clamd and waits a little for it (see
// managedStartWait).
func (s *Scanner) Configure(ctx context.Context, configJSON []byte) error {
	cfg, err := ParseConfig(configJSON)
	if err != nil {
		return err
	}
	s.configMu.Lock()
	defer s.configMu.Unlock()
	cur := s.current.Load()
	if cur.cfg.Equal(cfg) {
		cur.startMonitor(s, true)
		return nil
	}
	st, err := s.newState(cfg, cur, true)
	if err != nil {
		return err
	}
	if st.daemon != nil {
		// A managed clamd: wait a little for it, before it replaces
		// what serves now.
		wctx, cancel := withBudget(ctx, managedStartWait)
		err := st.daemon.WaitReady(wctx)
		cancel()
		if errors.Is(err, daemon.ErrCannotStart) && st.daemon != cur.daemon {
			// A database clamd cannot load is a fault in the config, said
			// at the database attribute, not a state to retry forever.
			st.close()
			return (&shared.ConfigError{}).Add(keyDatabase, "%v", err)
		}
		if err != nil {
			s.log.Warn("the managed clamd is not ready yet; scans answer unknown until it is", "error", err)
		}
	}
	s.current.Store(st)
	// Scans still on the old state close its sessions as they finish.
	cur.close()
	s.log.Info("configured", "address", strings.Join(cfg.Address, ","), "database", cfg.Database, "timeout", cfg.Timeout,
		"max_stream_size", cfg.MaxStreamSize, "max_connections", cfg.MaxConnections,
		"confidence", cfg.Confidence, "max_signature_age", cfg.MaxSignatureAge)
	// A round of checks, so the first scans know which clamds answer.
	s.checkAll(ctx, st, pingTimeout)
	return nil
}

// Health reports on every clamd: PING must answer PONG. It sends PING
// afresh, and reports the versions, load, probe findings and signature age
// the background checks keep. These calls do not take a max_connections
// slot: a plugin busy with long scans must still answer its health checks.
//
// It answers within healthBudget whatever clamd does: a clamd that is
// stopped (SIGSTOP) or swamped accepts the connection and then says
// nothing, and a Health that waited for it would spend the host's whole
// deadline, and the host would take the plugin for hung and kill it,
// cutting its scans. A clamd that cannot answer PING within the budget is
// unhealthy, which is what the host needs to know.
//
// Healthy means at least one clamd can be trusted with a benign answer.
// Degraded states (a clamd that skips content silently, stale signatures,
// signatures loading) are unhealthy, with the reason and the fix.
func (s *Scanner) Health(ctx context.Context) (shared.Health, error) {
	ctx, cancel := withBudget(ctx, healthBudget)
	defer cancel()
	st := s.current.Load()
	s.checkAll(ctx, st, healthBudget)
	// The probes are waited for a little: a clamd that skips silently is
	// found out in milliseconds (the cheap probes come first), and
	// `microengine plugins`, which asks Health once, then names the lines
	// to fix instead of "checking". The costly probe of a clamd that does
	// look (0.3-2.6 s) is not waited for: it is reported as checking.
	pctx, pcancel := context.WithTimeout(ctx, healthProbeWait)
	defer pcancel()
	var wg sync.WaitGroup
	for _, b := range st.backends {
		if b.managed != nil || !b.snapshot().up {
			// A clamd that does not answer is probed when it does: probes
			// now would only fail, and say so a second time.
			continue
		}
		b.ensureProbed(s.probes, s.probeCache(), st.stop)
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.settledTrust(pctx)
		}()
	}
	wg.Wait()
	healthy := false
	var lines []string
	var v clamd.Version
	var backends []shared.BackendHealth
	for _, b := range st.backends {
		snap := b.snapshot()
		line, ok := s.describe(st, snap)
		lines = append(lines, line)
		healthy = healthy || ok
		backends = append(backends, shared.BackendHealth{Name: snap.addr, Healthy: ok, InFlight: snap.inflight})
		if v.Engine == "" && snap.versionOK {
			v = snap.version
		}
	}
	msg := strings.Join(lines, "; ")
	return shared.Health{Healthy: healthy, Message: msg, VendorVersion: v.Engine, SignaturesVersion: v.Database, Backends: backends}, nil
}

// describe is one clamd's line in Health, and whether it can be trusted
// with a benign answer.
func (s *Scanner) describe(st *state, b snapshot) (string, bool) {
	who := "clamd at " + b.addr
	if b.isManaged {
		who = fmt.Sprintf("managed clamd (%d restarts) on %s", b.managed.Restarts, st.daemon.Database())
		if b.managed.Pid > 0 {
			who = fmt.Sprintf("managed clamd (pid %d, %d restarts) on %s", b.managed.Pid, b.managed.Restarts, st.daemon.Database())
		}
	}
	if !b.up {
		why := b.err
		if why == "" {
			why = "not checked yet"
		}
		if b.isManaged {
			return fmt.Sprintf("%s: %s", who, why), false
		}
		why += "; start it, fix address, or set database to a signature folder for a clamd the plugin runs itself"
		return fmt.Sprintf("%s: down: %s", who, why), false
	}
	ok := true
	parts := []string{fmt.Sprintf("%s: PONG", who)}
	if b.versionOK {
		parts = append(parts, b.version.Raw)
	}
	if stale, age := s.stale(st.cfg, b.version); !b.version.DatabaseTime.IsZero() {
		ageText := fmt.Sprintf("signatures %s old", age.Round(time.Hour))
		if stale {
			ageText += fmt.Sprintf(", more than max_signature_age %s: benign answers are unknown until freshclam updates them", st.cfg.MaxSignatureAge)
			ok = false
		}
		parts = append(parts, ageText)
	}
	if b.isManaged && b.managed.State == daemon.StateReloading {
		parts = append(parts, "reloading its signatures")
		ok = false
	}
	parts = append(parts, fmt.Sprintf("%d in flight", b.inflight))
	if !b.isManaged {
		parts = append(parts, b.trust.summary())
		if b.trust.state == trustFailed || b.trust.state == trustUnknown {
			parts = append(parts, "archives and other containers are answered unknown, plain text stays benign")
			ok = false
		}
	}
	return strings.Join(parts, ", "), ok
}

// stale reports whether v's daily database is older than the config
// allows, and its age.
func (s *Scanner) stale(cfg Config, v clamd.Version) (bool, time.Duration) {
	if v.DatabaseTime.IsZero() {
		return false, 0
	}
	age := s.now().Sub(v.DatabaseTime)
	return cfg.MaxSignatureAge > 0 && age > cfg.MaxSignatureAge, age
}

// withBudget bounds ctx to a quarter of the time it has left, and to at
// most max: a call that answers for the plugin's own liveness must leave
// its caller most of its deadline.
func withBudget(ctx context.Context, max time.Duration) (context.Context, context.CancelFunc) {
	d := max
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)/4)
	}
	return context.WithTimeout(ctx, d)
}

// Scan streams the artifact to a clamd and maps the answer. Faults are
// unknown results; only the end of ctx is returned as an error, so the host
// sees a cancellation or deadline as such.
func (s *Scanner) Scan(ctx context.Context, a shared.Artifact) (shared.Result, error) {
	st := s.current.Load()
	if a.Type != shared.ArtifactFile {
		return shared.Unknown("clamav scans files only, not %q artifacts", a.Type), nil
	}
	if a.Size > int64(st.cfg.MaxStreamSize) {
		// Not sent: clamd would refuse it at StreamMaxLength anyway, after
		// we had streamed 25 MiB for nothing.
		return s.unknown(a, nil, 0, "not scanned: the artifact is %d bytes, more than max_stream_size (%d)", a.Size, st.cfg.MaxStreamSize), nil
	}
	if a.Content == nil && a.Size != 0 {
		// Only an artifact known to be empty may come without content.
		return s.unknown(a, nil, 0, "not scanned: the artifact has no content (announced size %d)", a.Size), nil
	}

	// An artifact by reference waits for room on the pipe (see
	// pipeDepth), any other for a connection; one by reference that is
	// streamed after all takes a connection too (attempt).
	slots, byRef := st.slots, a.File != nil
	if byRef {
		slots = st.pipeSlots
	}
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return shared.Result{}, fmt.Errorf("clamav: waiting for a free clamd connection: %w", ctx.Err())
	}
	defer func() { <-slots }()

	b := st.pickUntried(nil)
	if b == nil {
		// The background checks may be behind (a clamd just back, a
		// managed one just loaded): check now, briefly.
		s.checkAll(ctx, st, pingTimeout)
		b = st.pickUntried(nil)
	}
	if b == nil {
		// Try the first clamd anyway, unless it is the managed one and
		// not ready.
		if b = st.backends[0]; b.managed != nil {
			return s.unknown(a, b, 0, "not scanned: the managed clamd is %s", b.snapshot().err), nil
		}
	}
	content := a.Content
	if content == nil {
		content = bytes.NewReader(nil)
	}
	rewind, err := s.rewinder(st, a, &content)
	if err != nil {
		return s.unknown(a, b, 0, "not scanned: %v", err), nil
	}

	// Every stream goes through the zip sniffer (see zipsniff.go).
	zs := newZipSniffer(content)
	start := time.Now()
	tried := map[*backend]bool{b: true}
	reply, sniff, err := s.attempt(ctx, st, b, a, zs, tried, rewind != nil, byRef)
	// A clamd that failed before answering hands the scan to another,
	// while there is one not tried yet: two can fail at once (one killed,
	// the next stopped).
	for err != nil && ctx.Err() == nil && retryable(err) {
		other := st.pickUntried(tried)
		if other == nil || !(clamd.Retryable(err) || (rewind != nil && rewind() == nil)) {
			break
		}
		s.log.Warn("clamd failed before answering; retrying on another", "artifact", a.ID, "from", b.addr, "to", other.addr, "error", err)
		b = other
		tried[b] = true
		zs.reset(content)
		reply, sniff, err = s.attempt(ctx, st, b, a, zs, tried, rewind != nil, byRef)
	}
	if err != nil {
		if ctx.Err() != nil {
			return shared.Result{}, fmt.Errorf("clamav: scan %s: %w", a.ID, ctx.Err())
		}
		return s.failure(a, st, b, err), nil
	}
	if s.log.IsDebug() {
		s.log.Debug("scanned", "artifact", a.ID, "clamd", b.addr, "reply", reply.Raw, "bytes", reply.ContentBytes, "duration", time.Since(start))
	}
	return s.verdict(ctx, a, st, b, reply, sniff, zs), nil
}

// rewinder makes the content readable a second time when that is cheap:
// it seeks back, or with more than one clamd a small artifact is read
// whole first. It returns nil when the content cannot be re-read.
func (s *Scanner) rewinder(st *state, a shared.Artifact, content *io.Reader) (func() error, error) {
	if len(st.backends) < 2 {
		return nil, nil
	}
	if sk, ok := (*content).(io.Seeker); ok {
		if pos, err := sk.Seek(0, io.SeekCurrent); err == nil {
			return func() error {
				_, err := sk.Seek(pos, io.SeekStart)
				return err
			}, nil
		}
	}
	if a.Size < 0 || a.Size > retryBufferMax {
		return nil, nil
	}
	buf := make([]byte, a.Size)
	if _, err := io.ReadFull(*content, buf); err != nil {
		return nil, fmt.Errorf("reading the content: %w", err)
	}
	r := bytes.NewReader(buf)
	// Whatever follows the announced size is still for clamd to see, so
	// a long stream stays a fault.
	orig := *content
	*content = io.MultiReader(r, orig)
	return func() error {
		r.Reset(buf)
		*content = io.MultiReader(r, orig)
		return nil
	}, nil
}

// retryable reports whether a scan failed because its clamd did: it
// refused or dropped the connection, said nothing, or did not finish in
// time. Such a scan may go to another clamd.
func retryable(err error) bool {
	return errors.Is(err, clamd.ErrConnect) || errors.Is(err, clamd.ErrNoReply) ||
		errors.Is(err, clamd.ErrScan) || errors.Is(err, context.DeadlineExceeded)
}

// attempt is one scan on b: FILDES for an artifact by reference when b
// can take it, INSTREAM otherwise. With another clamd to fall back on, it
// gets half the time left, so that a clamd that stalls leaves time for
// the retry. A clamd that was not shown to alert on what it skips gets
// the content through a textSniffer. pipeSlot: the scan holds a slot of
// st.pipeSlots, not of st.slots.
func (s *Scanner) attempt(ctx context.Context, st *state, b *backend, a shared.Artifact, content io.Reader, tried map[*backend]bool, halve, pipeSlot bool) (clamd.Reply, *textSniffer, error) {
	outer := ctx
	if halve && st.pickUntried(tried) != nil {
		if dl, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)/2))
			defer cancel()
		}
	}
	// By reference, to a clamd on a unix socket that alerts on what it
	// skips: clamd reads the file itself (FILDES), nothing is streamed or
	// spooled. Any other clamd (not probed yet, or shown to skip content
	// silently) gets the stream, through the sniffer that lets plain text
	// be benign from it.
	trusted := b.currentTrust().state == trustPassed
	fildes := a.File != nil && trusted && b.client.CanFildes()
	var sniff *textSniffer
	if !trusted {
		sniff = newTextSniffer(content)
		content = sniff
	}
	if pipeSlot && !fildes {
		// Streamed: a connection of its own, within max_connections.
		select {
		case st.slots <- struct{}{}:
		case <-ctx.Done():
			return clamd.Reply{}, sniff, fmt.Errorf("clamav: waiting for a free clamd connection: %w", ctx.Err())
		}
		defer func() { <-st.slots }()
	}
	b.inflight.Add(1)
	defer b.inflight.Add(-1)
	var reply clamd.Reply
	var err error
	if fildes {
		if zs, ok := content.(*zipSniffer); ok {
			zs.readAhead(outer, a)
		}
		if a.Size >= 0 {
			// The descriptor server fstat'ed it: a regular file of
			// a.Size bytes (and checks its size again after the scan).
			reply, err = b.client.FildesSized(ctx, a.File, a.Size)
		} else {
			reply, err = b.client.Fildes(ctx, a.File)
		}
	} else {
		reply, err = b.client.Instream(ctx, content)
	}
	// The clamd is taken for down when it failed the scan, not when the
	// scan's own time ran out (a large artifact, a slow host) or clamd
	// could not scan this content (ERROR).
	if err != nil && outer.Err() == nil && retryable(err) && !errors.Is(err, clamd.ErrScan) {
		if !b.markDown(err) {
			err = quiet{err}
		}
	}
	return reply, sniff, err
}

// verdict maps a completed scan.
func (s *Scanner) verdict(ctx context.Context, a shared.Artifact, st *state, b *backend, reply clamd.Reply, sniff *textSniffer, zs *zipSniffer) shared.Result {
	if a.Size >= 0 && reply.ContentBytes != a.Size {
		// The shared stream reader already refuses a length mismatch;
		// this guards a Content reader that does not.
		return s.unknown(a, b, reply.ContentBytes, "content held %d bytes, the artifact announced %d", reply.ContentBytes, a.Size)
	}
	switch reply.Status {
	case clamd.StatusOK:
		return s.benign(ctx, a, st, b, reply, sniff, zs)
	case clamd.StatusFound:
		if strings.HasPrefix(reply.Signature, limitsSignaturePrefix) {
			// clamd stopped early: not examined in full, so neither
			// benign nor malicious.
			r := s.unknown(a, b, reply.ContentBytes, "clamd stopped at a scan limit (%s): the artifact was not examined in full", reply.Signature)
			r.Metadata[shared.MetaComment] = shared.CommentDecompressionUnsafe
			return r
		}
		if strings.HasPrefix(reply.Signature, daemon.EvasionPrefix) {
			// The managed clamd's own signature of content it skips
			// (daemon.evasionSignatures): no malware, and not examined.
			r := s.unknown(a, b, reply.ContentBytes, "clamd skips part of it without an alert (%s): the artifact was not examined in full", reply.Signature)
			r.Metadata[shared.MetaComment] = shared.CommentDecompressionUnsafe
			return r
		}
		if strings.HasPrefix(reply.Signature, encryptedSignaturePrefix) {
			// Encryption is no sign of malice, and what it hides was not
			// examined.
			r := s.unknown(a, b, reply.ContentBytes, "clamd could not open encrypted content (%s): the artifact was not examined in full", reply.Signature)
			r.Metadata[shared.MetaComment] = shared.CommentEncrypted
			return r
		}
		return shared.Result{
			Verdict: shared.VerdictMalicious, Confidence: st.cfg.Confidence,
			MalwareFamily: reply.Signature,
			// clamd's Heuristics.* alerts (broken executables,
			// phishing...) come from its analysers, not a signature.
			Heuristic: strings.HasPrefix(reply.Signature, heuristicsPrefix),
			Metadata:  s.metadata(b), BytesScanned: reply.ContentBytes,
		}
	}
	return s.unknown(a, b, reply.ContentBytes, "clamd reply %q has no verdict", reply.Raw)
}

// benign maps an OK: benign only from a clamd that can be trusted with it.
func (s *Scanner) benign(ctx context.Context, a shared.Artifact, st *state, b *backend, reply clamd.Reply, sniff *textSniffer, zs *zipSniffer) shared.Result {
	if why := zipSkipped(a, zs, &s.zipBufs); why != "" {
		r := s.unknown(a, b, reply.ContentBytes, "clamd answered OK, but not for all of it: %s", why)
		r.Metadata[shared.MetaComment] = shared.CommentDecompressionUnsafe
		return r
	}
	if b.reloading() {
		r := s.unknown(a, b, reply.ContentBytes, "clamd answered OK while it was loading new signatures: not judged on a settled database")
		r.Metadata[shared.MetaComment] = shared.CommentSignaturesStale
		return r
	}
	v, ok := b.versions(ctx)
	if !ok && st.cfg.MaxSignatureAge > 0 {
		// VERSION failed (clamd went, or the scan left it no time): the
		// signatures' age is not known, so neither is that they are fresh.
		r := s.unknown(a, b, reply.ContentBytes, "clamd answered OK, but its VERSION could not be read: the signatures' age (max_signature_age %s) is not known", st.cfg.MaxSignatureAge)
		r.Metadata[shared.MetaComment] = shared.CommentSignaturesStale
		return r
	}
	if stale, age := s.stale(st.cfg, v); stale {
		r := s.unknown(a, b, reply.ContentBytes, "clamd answered OK, but its signatures (%s) are %s old, more than max_signature_age %s",
			v.Database, age.Round(time.Hour), st.cfg.MaxSignatureAge)
		r.Metadata[shared.MetaComment] = shared.CommentSignaturesStale
		return r
	}
	if b.managed == nil && (sniff == nil || !sniff.isPlain()) {
		t := b.currentTrust()
		if t.state == trustPending {
			// Wait for the probes (a few seconds, once per clamd),
			// within the scan's time.
			b.ensureProbed(s.probes, s.probeCache(), st.stop)
			t = b.settledTrust(ctx)
		}
		if t.state != trustPassed && sniff == nil && plainFile(a) {
			// Sent by reference before the probes had settled: the file
			// is looked at now (at most plainTextMax bytes).
			t.state = trustPassed
		}
		if t.state != trustPassed {
			why := t.summary()
			r := s.unknown(a, b, reply.ContentBytes, "clamd at %s answered OK, but its OK is not trusted for anything but plain text: %s", b.addr, why)
			r.Metadata[shared.MetaComment] = shared.CommentDecompressionUnsafe
			return r
		}
	}
	return shared.Result{
		Verdict: shared.VerdictBenign, Confidence: st.cfg.Confidence,
		Metadata: s.metadata(b), BytesScanned: reply.ContentBytes,
	}
}

// plainFile reports whether an artifact that came by reference is plain
// text (see textSniffer).
func plainFile(a shared.Artifact) bool {
	if a.File == nil || a.Size < 0 || a.Size > plainTextMax {
		return false
	}
	sn := newTextSniffer(io.NewSectionReader(a.File, 0, a.Size))
	if _, err := io.Copy(io.Discard, sn); err != nil {
		return false
	}
	return sn.isPlain()
}

// failure maps a scan that did not complete to unknown.
func (s *Scanner) failure(a shared.Artifact, st *state, b *backend, err error) shared.Result {
	var ce *clamd.Error
	var sent int64
	if errors.As(err, &ce) {
		sent = ce.ContentBytes
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		s.log.Warn("clamd call timed out", "artifact", a.ID, "clamd", b.addr, "timeout", st.cfg.Timeout, "error", err)
		return s.unknown(a, b, sent, "clamd did not finish within the %s timeout: %v", st.cfg.Timeout, err)
	case errors.Is(err, clamd.ErrSizeLimit) && ce != nil && ce.Reply != "":
		s.log.Warn("clamd refused the stream at its StreamMaxLength: set max_stream_size no higher than clamd's StreamMaxLength",
			"artifact", a.ID, "max_stream_size", st.cfg.MaxStreamSize, "sent", sent)
		return s.unknown(a, b, sent, "not scanned: clamd refused the stream at its StreamMaxLength, which is below max_stream_size (%d): %v", st.cfg.MaxStreamSize, err)
	case errors.Is(err, clamd.ErrSizeLimit):
		return s.unknown(a, b, sent, "not scanned: the content is longer than max_stream_size (%d): %v", st.cfg.MaxStreamSize, err)
	case errors.Is(err, clamd.ErrContent):
		s.log.Warn("could not read the artifact's content", "artifact", a.ID, "error", err)
		return s.unknown(a, b, sent, "not scanned: %v", err)
	}
	var q quiet
	if errors.As(err, &q) {
		// The clamd was already known to be down, and said so once.
		s.log.Debug("clamd scan failed", "artifact", a.ID, "clamd", b.addr, "error", err)
	} else {
		s.log.Warn("clamd scan failed", "artifact", a.ID, "clamd", b.addr, "error", err)
	}
	return s.unknown(a, b, sent, "clamd scan failed: %v", err)
}

// quiet marks the failure of a scan to a clamd already known to be down:
// it is reported once per outage (by the checks), not once per scan.
type quiet struct{ error }

func (q quiet) Unwrap() error { return q.error }

func (s *Scanner) unknown(a shared.Artifact, b *backend, sent int64, format string, args ...any) shared.Result {
	r := shared.Unknown(format, args...)
	r.Metadata = s.metadata(b)
	r.BytesScanned = sent
	s.log.Debug("unknown", "artifact", a.ID, "reason", r.Reason)
	return r
}

// metadata carries the versions of the clamd that answered, as the last
// checks saw them; it never waits on clamd.
func (s *Scanner) metadata(b *backend) map[string]string {
	m := map[string]string{}
	if b == nil {
		return m
	}
	snap := b.snapshot()
	if snap.version.Engine != "" {
		m[MetaVendorVersion] = snap.version.Engine
	}
	if snap.version.Database != "" {
		m[MetaSignaturesVersion] = snap.version.Database
	}
	return m
}
