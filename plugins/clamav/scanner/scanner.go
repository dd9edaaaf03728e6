// Package scanner is the clamav plugin's Scanner: it streams each artifact
// to clamd with INSTREAM and maps clamd's answer to a marketplace verdict.
//
// The mapping never turns a fault into benign. Only "stream: OK" for a
// stream that was sent whole is benign; a signature match is malicious;
// a scan limit clamd hit (Heuristics.Limits.Exceeded.*), a size limit, a
// timeout, a daemon that is down or dies mid-stream, a malformed reply —
// all are unknown, with the reason in Result.Reason and the log.
//
// Artifact types: files only. A URL's text is no file, and clamd has no URL
// reputation to judge it by: it would answer OK, a benign claim about a URL
// it never examined. Declaring `file` alone lets the host answer URL
// bounties unknown on its own, and lets a URL-capable plugin's verdict
// stand unopposed.
package scanner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/plugins/clamav/clamd"
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
	// MetaComment holds a standard comment on an unknown verdict, such as
	// SKIPPED:ENCRYPTED: why the artifact was not judged.
	MetaComment = "comment"
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

// Comments on an unknown result, as PolySwarm's ScanMetadata names them.
// They travel in Result.Metadata under MetaComment.
const (
	CommentDecompressionUnsafe = "SKIPPED:DECOMPRESSION-UNSAFE"
	CommentEncrypted           = "SKIPPED:ENCRYPTED"
)

// heuristicsPrefix names clamd's heuristic (non-signature) alerts.
const heuristicsPrefix = "Heuristics."

// Tuning that is not configuration.
const (
	// versionRefreshInterval: VERSION is re-asked at most this often from
	// scans, so a database update shows in results within a minute without
	// a VERSION call per scan. Health re-asks on every check.
	versionRefreshInterval = time.Minute
	// retryBackoff is the pause before the one retry of a scan whose
	// connection was refused (clamd restarting, listen queue full); the
	// clamd client makes it.
	retryBackoff = 200 * time.Millisecond
	// infoVersionTimeout bounds the VERSION call Info makes when no
	// version is known yet: Info must stay cheap with clamd down.
	infoVersionTimeout = 2 * time.Second
	// healthBudget bounds a health check (see Health). PING answers in
	// well under a millisecond from a live clamd, even a busy one; the
	// host's deadline for the call is 10 s.
	healthBudget = 2 * time.Second
)

// Scanner implements shared.Scanner on top of clamd. Its zero value is not
// usable: call New.
type Scanner struct {
	log hclog.Logger
	// configMu serialises Configure; scans never take it.
	configMu sync.Mutex
	// current is swapped whole by Configure: a scan runs to its end on the
	// state it started with.
	current  atomic.Pointer[state]
	versions *versionCache
}

// state is one configuration and what was built from it.
type state struct {
	cfg    Config
	client *clamd.Client
	// slots is a semaphore of MaxConnections tokens.
	slots chan struct{}
}

var _ shared.Scanner = (*Scanner)(nil)

// New returns a scanner with the default configuration.
func New(log hclog.Logger) *Scanner {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	s := &Scanner{log: log}
	st, err := newState(DefaultConfig(), nil)
	if err != nil {
		// The defaults are constants that parse: this is a programming error.
		panic(fmt.Sprintf("clamav: default config: %v", err))
	}
	s.current.Store(st)
	s.versions = newVersionCache(versionRefreshInterval, log)
	s.versions.use(st.client)
	return s
}

func newState(cfg Config, prev *state) (*state, error) {
	client, err := clamd.NewClient(cfg.Address, clamd.Options{
		Timeout:       cfg.Timeout,
		MaxStreamSize: int64(cfg.MaxStreamSize),
		// One kept session per connection a scan may hold.
		Sessions:     cfg.MaxConnections,
		RetryBackoff: retryBackoff,
	})
	if err != nil {
		return nil, err
	}
	st := &state{cfg: cfg, client: client}
	if prev != nil && prev.cfg.MaxConnections == cfg.MaxConnections {
		// Keep the semaphore, so scans in flight still count against
		// the same limit.
		st.slots = prev.slots
	} else {
		st.slots = make(chan struct{}, cfg.MaxConnections)
	}
	return st, nil
}

// Info describes the plugin. Versions come from a cache; only when none is
// known yet does Info ask clamd, briefly, and it still answers if clamd is
// down.
func (s *Scanner) Info(ctx context.Context) (shared.Info, error) {
	v, ok := s.versions.get()
	if !ok {
		vctx, cancel := context.WithTimeout(ctx, infoVersionTimeout)
		v, _ = s.versions.fetch(vctx)
		cancel()
	}
	return shared.Info{
		Name:              Name,
		Version:           Version,
		Vendor:            Vendor,
		VendorVersion:     v.Engine,
		SignaturesVersion: v.Database,
		ArtifactTypes:     []shared.ArtifactType{shared.ArtifactFile},
		ConfigSchema:      ConfigSchema(),
		Samples:           Samples(),
		HasBackend:        true,
	}, nil
}

// Configure applies a config block. It is idempotent (the same config
// changes nothing) and safe during scans: a new configuration is swapped in
// whole, and scans in flight finish on the one they started with.
func (s *Scanner) Configure(_ context.Context, configJSON []byte) error {
	cfg, err := ParseConfig(configJSON)
	if err != nil {
		return err
	}
	s.configMu.Lock()
	defer s.configMu.Unlock()
	cur := s.current.Load()
	if cur.cfg == cfg {
		return nil
	}
	st, err := newState(cfg, cur)
	if err != nil {
		return (&shared.ConfigError{}).Add(keyAddress, "%v", err)
	}
	s.current.Store(st)
	s.versions.use(st.client)
	// Scans still on the old client close its sessions as they finish.
	cur.client.Close()
	s.log.Info("configured", "address", cfg.Address, "timeout", cfg.Timeout,
		"max_stream_size", cfg.MaxStreamSize, "max_connections", cfg.MaxConnections,
		"confidence", cfg.Confidence)
	return nil
}

// Health reaches clamd: PING must answer PONG. It also re-reads VERSION, so
// a signature update shows in Info and results, and STATS for the message.
// These short calls do not take a max_connections slot: a plugin busy with
// long scans must still answer its health checks.
//
// It answers within healthBudget whatever clamd does: a clamd that is
// stopped (SIGSTOP) or swamped accepts the connection and then says
// nothing, and a Health that waited for it would spend the host's whole
// deadline, and the host would take the plugin for hung and kill it,
// cutting its scans. A clamd that cannot answer PING within the budget is
// unhealthy, which is what the host needs to know.
func (s *Scanner) Health(ctx context.Context) (shared.Health, error) {
	ctx, cancel := withBudget(ctx, healthBudget)
	defer cancel()
	st := s.current.Load()
	addr := st.client.Address().String()
	if err := st.client.Ping(ctx); err != nil {
		v, _ := s.versions.get()
		return shared.Health{
			Healthy: false, Message: fmt.Sprintf("clamd at %s does not answer PING: %v", addr, err),
			VendorVersion: v.Engine, SignaturesVersion: v.Database,
		}, nil
	}
	// VERSION and STATS side by side, in what is left of the budget.
	var stats clamd.Stats
	var statsErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		stats, statsErr = st.client.Stats(ctx)
	}()
	v, err := s.versions.fetch(ctx)
	<-done
	if err != nil {
		return shared.Health{Healthy: false, Message: fmt.Sprintf("clamd at %s answers PING but not VERSION: %v", addr, err)}, nil
	}
	msg := fmt.Sprintf("clamd %s at %s: PONG", v.Engine, addr)
	if statsErr == nil {
		msg += fmt.Sprintf("; threads live %d idle %d max %d; queue %d", stats.ThreadsLive, stats.ThreadsIdle, stats.ThreadsMax, stats.QueueItems)
	}
	return shared.Health{Healthy: true, Message: msg, VendorVersion: v.Engine, SignaturesVersion: v.Database}, nil
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

// Scan streams the artifact to clamd and maps the answer. Faults are
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
		return s.unknown(a, 0, "not scanned: the artifact is %d bytes, more than max_stream_size (%d)", a.Size, st.cfg.MaxStreamSize), nil
	}
	if a.Content == nil && a.Size != 0 {
		// Only an artifact known to be empty may come without content.
		return s.unknown(a, 0, "not scanned: the artifact has no content (announced size %d)", a.Size), nil
	}

	select {
	case st.slots <- struct{}{}:
	case <-ctx.Done():
		return shared.Result{}, fmt.Errorf("clamav: waiting for a free clamd connection: %w", ctx.Err())
	}
	defer func() { <-st.slots }()

	start := time.Now()
	reply, err := st.client.Instream(ctx, a.Content)
	if err != nil {
		if ctx.Err() != nil {
			return shared.Result{}, fmt.Errorf("clamav: scan %s: %w", a.ID, ctx.Err())
		}
		return s.failure(a, st, err), nil
	}
	s.log.Debug("scanned", "artifact", a.ID, "reply", reply.Raw, "bytes", reply.ContentBytes, "duration", time.Since(start))
	if _, known := s.versions.get(); !known {
		// The first verdict (Info and Health not called yet) still
		// carries the versions: clamd has just answered, so this is quick.
		vctx, cancel := context.WithTimeout(ctx, infoVersionTimeout)
		_, _ = s.versions.fetch(vctx)
		cancel()
	}
	return s.verdict(a, st, reply), nil
}

// verdict maps a completed scan.
func (s *Scanner) verdict(a shared.Artifact, st *state, reply clamd.Reply) shared.Result {
	if a.Size >= 0 && reply.ContentBytes != a.Size {
		// The shared stream reader already refuses a length mismatch;
		// this guards a Content reader that does not.
		return s.unknown(a, reply.ContentBytes, "content held %d bytes, the artifact announced %d", reply.ContentBytes, a.Size)
	}
	switch reply.Status {
	case clamd.StatusOK:
		return shared.Result{
			Verdict: shared.VerdictBenign, Confidence: st.cfg.Confidence,
			Metadata: s.metadata(), BytesScanned: reply.ContentBytes,
		}
	case clamd.StatusFound:
		if strings.HasPrefix(reply.Signature, limitsSignaturePrefix) {
			// clamd stopped early: not examined in full, so neither
			// benign nor malicious.
			r := s.unknown(a, reply.ContentBytes, "clamd stopped at a scan limit (%s): the artifact was not examined in full", reply.Signature)
			r.Metadata[MetaComment] = CommentDecompressionUnsafe
			return r
		}
		if strings.HasPrefix(reply.Signature, encryptedSignaturePrefix) {
			// Encryption is no sign of malice, and what it hides was not
			// examined.
			r := s.unknown(a, reply.ContentBytes, "clamd could not open encrypted content (%s): the artifact was not examined in full", reply.Signature)
			r.Metadata[MetaComment] = CommentEncrypted
			return r
		}
		return shared.Result{
			Verdict: shared.VerdictMalicious, Confidence: st.cfg.Confidence,
			MalwareFamily: reply.Signature,
			// clamd's Heuristics.* alerts (encrypted archives, broken
			// executables, phishing...) come from its analysers, not a
			// signature.
			Heuristic: strings.HasPrefix(reply.Signature, heuristicsPrefix),
			Metadata:  s.metadata(), BytesScanned: reply.ContentBytes,
		}
	}
	return s.unknown(a, reply.ContentBytes, "clamd reply %q has no verdict", reply.Raw)
}

// failure maps a scan that did not complete to unknown.
func (s *Scanner) failure(a shared.Artifact, st *state, err error) shared.Result {
	var ce *clamd.Error
	var sent int64
	if errors.As(err, &ce) {
		sent = ce.ContentBytes
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		s.log.Warn("clamd call timed out", "artifact", a.ID, "timeout", st.cfg.Timeout, "error", err)
		return s.unknown(a, sent, "clamd did not finish within the %s timeout: %v", st.cfg.Timeout, err)
	case errors.Is(err, clamd.ErrSizeLimit) && ce != nil && ce.Reply != "":
		s.log.Warn("clamd refused the stream at its StreamMaxLength: set max_stream_size no higher than clamd's StreamMaxLength",
			"artifact", a.ID, "max_stream_size", st.cfg.MaxStreamSize, "sent", sent)
		return s.unknown(a, sent, "not scanned: clamd refused the stream at its StreamMaxLength, which is below max_stream_size (%d): %v", st.cfg.MaxStreamSize, err)
	case errors.Is(err, clamd.ErrSizeLimit):
		return s.unknown(a, sent, "not scanned: the content is longer than max_stream_size (%d): %v", st.cfg.MaxStreamSize, err)
	case errors.Is(err, clamd.ErrContent):
		s.log.Warn("could not read the artifact's content", "artifact", a.ID, "error", err)
		return s.unknown(a, sent, "not scanned: %v", err)
	}
	s.log.Warn("clamd scan failed", "artifact", a.ID, "error", err)
	return s.unknown(a, sent, "clamd scan failed: %v", err)
}

func (s *Scanner) unknown(a shared.Artifact, sent int64, format string, args ...any) shared.Result {
	r := shared.Unknown(format, args...)
	r.Metadata = s.metadata()
	r.BytesScanned = sent
	s.log.Debug("unknown", "artifact", a.ID, "reason", r.Reason)
	return r
}

// metadata carries the versions the host reports with each result. It uses
// the cache and may start a background refresh; it never waits on clamd.
func (s *Scanner) metadata() map[string]string {
	v, _ := s.versions.getFresh()
	m := map[string]string{}
	if v.Engine != "" {
		m[MetaVendorVersion] = v.Engine
	}
	if v.Database != "" {
		m[MetaSignaturesVersion] = v.Database
	}
	return m
}
