package marketplace

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Webhook headers (docs/architecture.md, "The marketplace protocol").
const (
	HeaderEvent     = "X-POLYSWARM-EVENT"
	HeaderDelivery  = "X-POLYSWARM-DELIVERY"
	HeaderSignature = "X-POLYSWARM-SIGNATURE"
)

// maxBountyLifetime bounds how far ahead an accepted bounty's expiration
// may be: the marketplace's windows are minutes long, so a later one
// (year 2300, 9999) is a fault or an attack. Unbounded, it would hold a
// record open and its answer's retries for centuries, and it does not fit
// the store's nanosecond index (which ends in 2262).
const maxBountyLifetime = 24 * time.Hour

// reply is every JSON answer of the webhook endpoint.
type reply struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Handler serves POST on any path (webhooks), GET / (liveness) and GET
// /healthz (readiness: 503 when no plugin is healthy). /metrics is served
// apart, on MetricsHandler's own listener (metrics_listen).
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		writeReply(w, http.StatusOK, reply{Status: "OK"})
	})
	mux.HandleFunc("GET /healthz", s.healthz)
	// Webhooks on any path: polyswarm_engine routes them to
	// POST /<engine_queue>, and the signature, not the path, says who
	// sent them. They bypass the mux, which answers a path it would clean
	// (//queue, /a/../queue) with a redirect: the bounty would not be
	// taken.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			s.webhook(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// MetricsHandler serves GET /metrics (and /healthz, for a probe that
// only reaches the metrics port).
func (s *Service) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("GET /healthz", s.healthz)
	return mux
}

func (s *Service) healthz(w http.ResponseWriter, _ *http.Request) {
	if s.opts.Healthy != nil && !s.opts.Healthy() {
		writeReply(w, http.StatusServiceUnavailable, reply{Status: "UNHEALTHY", Reason: "no scanner plugin is healthy"})
		return
	}
	writeReply(w, http.StatusOK, reply{Status: "OK"})
}

func (s *Service) webhook(w http.ResponseWriter, r *http.Request) {
	event := strings.ToLower(strings.TrimSpace(r.Header.Get(HeaderEvent)))
	code := s.serveWebhook(w, r, event)
	label := event
	if label != "ping" && label != "bounty" {
		label = "other" // bounded label values
	}
	s.metrics.webhooks.WithLabelValues(label, strconv.Itoa(code)).Inc()
}

// bodyReadTimeout bounds reading one webhook body once its headers are
// in: the marketplace sends a few KB at once, so a body still arriving
// after this is a slow client holding one of the few body buffers.
const bodyReadTimeout = 5 * time.Second

// serveWebhook checks, in order: the declared body fits (413) and it is
// signed (400) — both before a byte of the body is read —, a body buffer
// is free (503: the marketplace retries), the body fits (413), the
// signature matches one of the secrets (401), the event is known (400).
// Only then is the body looked at. Every refusal closes the connection:
// no unread body is drained afterwards, and a stranger cannot keep idle
// connections (up to max_connections) open after being refused.
func (s *Service) serveWebhook(w http.ResponseWriter, r *http.Request, event string) int {
	fail := func(code int, reason string) int {
		w.Header().Set("Connection", "close")
		writeReply(w, code, reply{Status: "ERROR", Reason: reason})
		return code
	}
	if r.ContentLength > s.cfg.MaxBodySize {
		return fail(http.StatusRequestEntityTooLarge, "body is over the size limit")
	}
	sig := r.Header.Get(HeaderSignature)
	if strings.TrimSpace(sig) == "" {
		return fail(http.StatusBadRequest, "missing "+HeaderSignature)
	}
	rc := http.NewResponseController(w)
	rd, ok := s.bodies.take(func() { _ = rc.SetReadDeadline(time.Now()) })
	if !ok {
		w.Header().Set("Retry-After", "1")
		return fail(http.StatusServiceUnavailable, "too many webhooks in flight: retry")
	}
	// Given back as soon as the body is parsed (the bounty holds copies):
	// committing it takes milliseconds, reading it microseconds.
	release := sync.OnceFunc(func() { s.bodies.give(rd) })
	defer release()
	_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
	body, err := readBody(r.Body, rd.buf, s.cfg.MaxBodySize)
	rd.buf.b = body[:0] // keep what the buffer grew to
	if !s.bodies.read(rd) {
		w.Header().Set("Retry-After", "1")
		return fail(http.StatusServiceUnavailable, "the body came too slowly while others waited: retry")
	}
	if err != nil {
		if errors.Is(err, errBodyTooBig) {
			return fail(http.StatusRequestEntityTooLarge, "body is over the size limit")
		}
		return fail(http.StatusBadRequest, "cannot read the body: "+err.Error())
	}
	if !verifySignature(s.cfg.WebhookSecrets, body, sig) {
		return fail(http.StatusUnauthorized, "signature does not match")
	}

	switch event {
	case "ping":
		writeReply(w, http.StatusOK, reply{Status: "OK"})
		return http.StatusOK
	case "bounty":
	case "":
		return fail(http.StatusBadRequest, "missing "+HeaderEvent)
	default:
		return fail(http.StatusBadRequest, "unsupported event "+truncate(event, 40)+" (want ping or bounty)")
	}

	b, err := ParseBounty(body)
	release()
	if err != nil {
		return fail(http.StatusBadRequest, err.Error())
	}
	now := s.now()
	if limit := now.Add(maxBountyLifetime); b.Expiration.After(limit) {
		s.log.Warn("bounty expiration is too far ahead: bounded", "bounty", b.ID, "phase", b.Phase, "expiration", b.Expiration, "bounded_to", limit)
		b.Expiration = limit
	}
	delivery := deliveryKey(r.Header.Get(HeaderDelivery))
	if s.move != nil {
		// An older version's bounties.db is being moved in: a bounty it
		// holds is moved first, so a redelivery is known as one.
		if err := s.move.recall(r.Context(), b.Key()); err != nil {
			s.log.Error("cannot look the bounty up in bounties.db: refusing it so the marketplace retries", "bounty", b.ID, "phase", b.Phase, "error", err)
			return fail(http.StatusServiceUnavailable, "cannot store the bounty")
		}
	}
	if code, ok := s.answerCached(b, delivery, now); ok {
		if code != http.StatusAccepted {
			return fail(code, "cannot store the bounty")
		}
		writeReply(w, http.StatusAccepted, reply{Status: "ACCEPTED"})
		return http.StatusAccepted
	}
	isNew, err := s.store.Put(r.Context(), b, delivery, now)
	if err != nil {
		s.log.Error("cannot store a bounty: refusing it so the marketplace retries", "bounty", b.ID, "phase", b.Phase, "error", err)
		return fail(http.StatusServiceUnavailable, "cannot store the bounty")
	}
	if isNew {
		s.metrics.received.WithLabelValues(string(b.Phase)).Inc()
		s.log.Debug("bounty accepted", "bounty", b.ID, "phase", b.Phase, "delivery", delivery, "expiration", b.Expiration)
		if s.opts.Role.works() {
			s.dispatch(task{key: string(b.Key()), b: b})
		}
	} else {
		s.metrics.duplicates.Inc()
		s.log.Debug("redelivered bounty acknowledged", "bounty", b.ID, "phase", b.Phase, "delivery", delivery)
	}
	writeReply(w, http.StatusAccepted, reply{Status: "ACCEPTED"})
	return http.StatusAccepted
}

// deliveryKey bounds what a delivery id costs the store: ids are UUIDs in
// practice, and a longer one is kept as its hash.
func deliveryKey(id string) string {
	id = strings.TrimSpace(id)
	if len(id) <= 128 {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func writeReply(w http.ResponseWriter, code int, r reply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(r)
}

var errBodyTooBig = errors.New("body is over the size limit")

// readBody reads r into buf's storage, up to limit bytes.
func readBody(r io.Reader, buf *bodyBuf, limit int64) ([]byte, error) {
	b := bytes.NewBuffer(buf.b[:0])
	n, err := b.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return b.Bytes(), err
	}
	if n > limit {
		return b.Bytes(), errBodyTooBig
	}
	return b.Bytes(), nil
}

// bodyBuf is one reusable webhook body buffer.
type bodyBuf struct{ b []byte }

// minBodyHold is how long a body may keep arriving before a newcomer may
// take its buffer over when none is free. The marketplace sends a bounty
// of a few KB in one write: read in well under a millisecond here, a few
// round trips across the internet. Without it, a hundred strangers
// trickling forged bodies (a few bytes a second each) held every buffer
// for the whole body timeout, again and again, and every signed bounty
// was answered 503.
const minBodyHold = 250 * time.Millisecond

// takeOverWait bounds how long a newcomer waits for the buffer of the
// body it stopped.
const takeOverWait = time.Second

// bodyPool holds the webhook body buffers. Its size is how many bodies
// may be read at once: a flood of unsigned bodies costs at most
// size × max_body_size, and buffers are reused rather than left to the
// collector (measured before: 1,000 connections sending 1 MiB each took
// the engine from 27 MB to 1.21 GB resident). When none is free, the body
// that has been arriving longest, if past minBodyHold, gives its buffer
// up (it is answered 503): a slow body cannot keep one from a fast one.
type bodyPool struct {
	free    chan *bodyBuf
	maxKeep int // a buffer grown past this is dropped, not kept

	mu      sync.Mutex
	reading map[*bodyRead]struct{} // bodies still arriving
}

// bodyRead is one body being read into a buffer of the pool.
type bodyRead struct {
	buf     *bodyBuf
	since   time.Time
	stop    func() // ends the read at once (its connection's read deadline)
	stopped bool   // under bodyPool.mu
}

func newBodyPool(n int, maxBody int64) *bodyPool {
	p := &bodyPool{free: make(chan *bodyBuf, n), maxKeep: int(min(maxBody+1, 1<<20)), reading: map[*bodyRead]struct{}{}}
	for range n {
		p.free <- &bodyBuf{}
	}
	return p
}

// take returns a free buffer for a body; stop must end that body's read
// at once. When none is free, the body arriving longest gives its buffer
// up if it has had minBodyHold; otherwise the newcomer waits up to
// minBodyHold for one (the marketplace may send many webhooks at once, and
// a fast body frees its buffer within milliseconds: 1,000 signed bounties
// sent at once against 64 buffers had 892 refused), then may take over a
// body that has now had minBodyHold. False when none could be had.
func (p *bodyPool) take(stop func()) (*bodyRead, bool) {
	select {
	case b := <-p.free:
		return p.start(b, stop), true
	default:
	}
	wait := minBodyHold
	stopped := p.stopSlowest(time.Now())
	if stopped {
		wait = takeOverWait
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case b := <-p.free:
		return p.start(b, stop), true
	case <-t.C:
	}
	if stopped || !p.stopSlowest(time.Now()) {
		return nil, false
	}
	t.Reset(takeOverWait)
	select {
	case b := <-p.free:
		return p.start(b, stop), true
	case <-t.C:
		return nil, false
	}
}

func (p *bodyPool) start(b *bodyBuf, stop func()) *bodyRead {
	r := &bodyRead{buf: b, since: time.Now(), stop: stop}
	p.mu.Lock()
	p.reading[r] = struct{}{}
	p.mu.Unlock()
	return r
}

// stopSlowest stops the body that has been arriving longest, if for at
// least minBodyHold.
func (p *bodyPool) stopSlowest(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	var oldest *bodyRead
	for r := range p.reading {
		if !r.stopped && now.Sub(r.since) >= minBodyHold && (oldest == nil || r.since.Before(oldest.since)) {
			oldest = r
		}
	}
	if oldest == nil {
		return false
	}
	oldest.stopped = true
	delete(p.reading, oldest)
	oldest.stop()
	return true
}

// read records that r's body is in (or its read failed): it can no
// longer be stopped. False when it was stopped to free its buffer.
func (p *bodyPool) read(r *bodyRead) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.reading, r)
	return !r.stopped
}

// give returns r's buffer to the pool.
func (p *bodyPool) give(r *bodyRead) {
	p.read(r)
	b := r.buf
	if cap(b.b) > p.maxKeep {
		b.b = nil
	}
	p.free <- b
}
