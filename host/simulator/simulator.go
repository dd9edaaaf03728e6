// Package simulator plays the PolySwarm marketplace against an engine: it
// serves artifacts over HTTP, sends signed bounties with real deadlines to
// the engine's webhook URL at a fixed rate, takes the answers at its own
// response URLs, checks them against the protocol (bids within the rules,
// and the answer's JSON Schema, internal/answerschema) and the expected
// verdicts, and keeps the score.
//
// It implements its side of the protocol on its own (it does not import
// the engine's marketplace package), so a misreading of the protocol in
// one is not silently shared by the other.
package simulator

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microengine/microengine/shared"
)

// Options configure a simulation.
type Options struct {
	// URL is the engine's webhook URL, e.g. http://127.0.0.1:8080/.
	URL string
	// URLs are more webhook URLs (engines sharing one cluster): bounties
	// are spread over URL and these in turn, and a webhook that gets no
	// connection or a 5xx is delivered again (same delivery id) to the
	// next, as a load balancer in front of them would; when every one
	// refused it, the round is tried again after a back-off, until half
	// the bounty's lifetime is gone, as the marketplace redelivers.
	URLs   []string
	Secret string
	// Count bounties are sent, Rate per second (default 10).
	Count int
	Rate  float64
	// Expiry is each bounty's lifetime: expiration = sent + Expiry.
	// Default 10s.
	Expiry time.Duration
	// Samples are offered in turn. Default: DefaultSamples().
	Samples []Sample
	// Listen is where artifacts are served and answers taken. Default
	// 127.0.0.1:0.
	Listen string
	// Concurrency bounds webhook requests in flight. Default 64.
	Concurrency int
	// Grace is how long to wait past the last expiration for late answers.
	// Default 500ms.
	Grace time.Duration
	// StartID is the first bounty id. Default: derived from the clock, so
	// reruns against the same engine store never collide.
	StartID int64
	// Insecure skips verifying the engine's TLS certificate.
	Insecure bool
	// MinBid and MaxBid are the rules sent (wei); default 1/16 NCT and 1 NCT.
	MinBid, MaxBid string
	// Dialect is the form of the bounties sent; default the marketplace's.
	Dialect Dialect
}

const (
	defaultMinBid = "62500000000000000"
	defaultMaxBid = "1000000000000000000"
)

func (o *Options) defaults() error {
	if o.URL == "" {
		return errors.New("simulator: no engine URL")
	}
	if o.Secret == "" {
		return errors.New("simulator: no webhook secret")
	}
	if o.Count <= 0 {
		o.Count = 10
	}
	if o.Rate <= 0 {
		o.Rate = 10
	}
	if o.Expiry <= 0 {
		o.Expiry = 10 * time.Second
	}
	if len(o.Samples) == 0 {
		o.Samples = DefaultSamples()
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Grace <= 0 {
		o.Grace = 500 * time.Millisecond
	}
	if o.StartID == 0 {
		o.StartID = time.Now().UnixMicro()
	}
	if o.MinBid == "" {
		o.MinBid = defaultMinBid
	}
	if o.MaxBid == "" {
		o.MaxBid = defaultMaxBid
	}
	d, err := ParseDialect(string(o.Dialect))
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	o.Dialect = d
	return nil
}

// bounty is one sent bounty and what became of it.
type bounty struct {
	sample     *Sample
	sentAt     time.Time
	expiration time.Time
	accepted   bool
	answered   bool
	// settled: the answer's reply was sent, and it counts (pending).
	settled    bool
	answeredAt time.Time
	verdict    shared.Verdict
	bid        string // as sent, to tell a conflicting repeat
	invalid    string
	// backends are the plugins' own verdicts from the answer's metadata.
	backends   map[string]shared.Verdict
	duplicates int
	// conflicting counts the repeats whose verdict or bid differ from
	// the first answer.
	conflicting int
}

type sim struct {
	opts     Options
	base     string // the simulator's own URL
	client   *http.Client
	mu       sync.Mutex
	bounties []bounty
	errors   []string
	pending  int // accepted, not yet answered
	changed  chan struct{}
	// fetches counts artifact downloads.
	fetches atomic.Int64
}

// Run plays one simulation and returns its scoreboard. ctx cancels it
// early (the scoreboard then covers what was sent).
func Run(ctx context.Context, opts Options) (*Scoreboard, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("simulator: listen: %w", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = opts.Concurrency
	if opts.Insecure {
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // explicitly asked for, for self-signed test engines
	}
	s := &sim{
		opts: opts, base: "http://" + ln.Addr().String(),
		client:   &http.Client{Transport: transport, Timeout: 30 * time.Second},
		bounties: make([]bounty, opts.Count),
		changed:  make(chan struct{}, 1),
	}
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer func() {
		// Close, not Shutdown: the score is kept, and Shutdown would wait
		// on connections the engine dialled but never used.
		srv.Close()
		transport.CloseIdleConnections()
	}()

	start := time.Now()
	s.sendAll(ctx, start)
	s.waitAnswers(ctx)
	return s.score(time.Since(start)), nil
}

func (s *sim) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /artifacts/{i}", func(w http.ResponseWriter, r *http.Request) {
		i, err := strconv.Atoi(r.PathValue("i"))
		if err != nil || i < 0 || i >= len(s.opts.Samples) {
			http.NotFound(w, r)
			return
		}
		// A url sample's content is the URL to judge, served as a
		// download like a file's (the marketplace's text/uri-list).
		ctype := "application/octet-stream"
		if s.opts.Samples[i].Type == shared.ArtifactURL {
			ctype = "text/uri-list"
		}
		w.Header().Set("Content-Type", ctype)
		s.fetches.Add(1)
		w.Write(s.opts.Samples[i].Content)
	})
	mux.HandleFunc("POST /respond/{id}", s.answer)
	return mux
}

// sendAll sends the bounties at the fixed rate: bounty i leaves at
// start + i/rate, whatever the engine's response time (each webhook runs in
// its own goroutine, up to Concurrency at once).
func (s *sim) sendAll(ctx context.Context, start time.Time) {
	interval := time.Duration(float64(time.Second) / s.opts.Rate)
	sem := make(chan struct{}, s.opts.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range s.opts.Count {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.send(ctx, i)
		}()
	}
}

func (s *sim) send(ctx context.Context, i int) {
	sample := &s.opts.Samples[i%len(s.opts.Samples)]
	id := s.opts.StartID + int64(i)
	now := time.Now()
	exp := now.Add(s.opts.Expiry)
	// Both types are downloaded: a url bounty's link leads to the URL.
	uri := s.base + "/artifacts/" + strconv.Itoa(i%len(s.opts.Samples))
	sum := sha256.Sum256(sample.Content)
	body := map[string]any{
		"id":            id,
		"artifact_type": string(sample.Type),
		"artifact_uri":  uri,
		// Naive UTC with microseconds, as the marketplace's Python sends.
		"expiration":   exp.UTC().Format("2006-01-02T15:04:05.000000"),
		"response_url": s.base + "/respond/" + strconv.FormatInt(id, 10),
		"phase":        "assertion",
		"sha256":       hex.EncodeToString(sum[:]),
		"metadata":     map[string]any{"filename": sample.Name, "size": len(sample.Content)},
		"rules":        map[string]any{"min_allowed_bid": json.Number(s.opts.MinBid), "max_allowed_bid": json.Number(s.opts.MaxBid)},
		"duration":     int(s.opts.Expiry / time.Second),
		"tasked_at":    now.UTC().Format("2006-01-02T15:04:05.000000"),
	}
	if sample.Mimetype != "" {
		body["mimetype"] = sample.Mimetype
	}
	postURL := s.opts.URL
	if s.opts.Dialect == DialectPolySwarm {
		postURL = s.polyswarmForm(i, id, body, sample.Content)
	}
	raw, _ := json.Marshal(body)

	s.mu.Lock()
	s.bounties[i] = bounty{sample: sample, sentAt: now, expiration: exp}
	s.mu.Unlock()

	targets := []string{postURL}
	if len(s.opts.URLs) > 0 && s.opts.Dialect != DialectPolySwarm {
		all := append([]string{s.opts.URL}, s.opts.URLs...)
		targets = append(all[i%len(all):], all[:i%len(all)]...)
	}
	code, reply, err := s.deliver(ctx, targets, raw, deliveryID(), now.Add(s.opts.Expiry/2))
	if err != nil {
		s.fail(fmt.Sprintf("bounty %d: %v", id, err))
		return
	}
	if code != http.StatusAccepted {
		s.fail(fmt.Sprintf("bounty %d: HTTP %d %s", id, code, bytes.TrimSpace(reply)))
		return
	}
	s.mu.Lock()
	b := &s.bounties[i]
	b.accepted = true
	if !b.settled { // an answer can beat the 202 back
		s.pending++
	}
	s.mu.Unlock()
}

// deliver posts a webhook to targets in turn until one takes it (an answer
// below 500). With several targets, rounds repeat after a back-off until
// giveUp; the last failure is returned.
func (s *sim) deliver(ctx context.Context, targets []string, raw []byte, delivery string, giveUp time.Time) (int, []byte, error) {
	backoff := 100 * time.Millisecond
	for {
		var code int
		var reply []byte
		var err error
		for _, target := range targets {
			code, reply, err = s.post(ctx, target, raw, delivery)
			if err == nil && code < 500 {
				return code, reply, nil
			}
		}
		if len(targets) == 1 || time.Now().Add(backoff).After(giveUp) {
			return code, reply, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return code, reply, err
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (s *sim) post(ctx context.Context, url string, raw []byte, delivery string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(raw))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-POLYSWARM-EVENT", "bounty")
	req.Header.Set("X-POLYSWARM-DELIVERY", delivery)
	req.Header.Set("X-POLYSWARM-SIGNATURE", sign(s.opts.Secret, raw))
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, reply, nil
}

func (s *sim) fail(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errors) < 20 {
		s.errors = append(s.errors, msg)
	}
}

// answer takes an engine's answer and checks it against the protocol.
func (s *sim) answer(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	i := id - s.opts.StartID
	if err != nil || i < 0 || i >= int64(len(s.bounties)) {
		http.NotFound(w, r)
		return
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "cannot read the answer", http.StatusBadRequest)
		return
	}
	verdict, bid, problem := checkAnswerBid(raw, s.opts.MinBid, s.opts.MaxBid)

	s.mu.Lock()
	b := &s.bounties[i]
	if b.answered {
		b.duplicates++
		if verdict != b.verdict || bid != b.bid {
			b.conflicting++
		}
		s.mu.Unlock()
		s.fail(fmt.Sprintf("bounty %d: answered again: %s", id, raw))
		w.WriteHeader(http.StatusOK)
		return
	}
	b.answered, b.answeredAt, b.verdict, b.bid, b.invalid = true, at, verdict, bid, problem
	b.backends = backendVerdicts(raw)
	s.mu.Unlock()
	if problem != "" {
		s.fail(fmt.Sprintf("bounty %d: invalid answer: %s: %s", id, problem, raw))
		// The real marketplace refuses a malformed assertion.
		http.Error(w, problem, http.StatusBadRequest)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	// The reply is on its way before the answer counts: the run ends
	// (and closes every connection) once the last one counts, and an
	// engine whose POST was cut off before its reply takes it for a
	// failure and posts again (TestRolesSplit's worker logged 39 answers
	// of 40 once, its last POST ending in EOF).
	_ = http.NewResponseController(w).Flush()
	s.mu.Lock()
	b.settled = true
	if b.accepted {
		s.pending--
	}
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// waitAnswers returns when every accepted bounty is answered, or when the
// last expiration plus the grace has passed.
func (s *sim) waitAnswers(ctx context.Context) {
	deadline := time.Now().Add(s.opts.Expiry + s.opts.Grace)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		s.mu.Lock()
		pending := s.pending
		s.mu.Unlock()
		if pending <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-s.changed:
		}
	}
}

func sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func deliveryID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
