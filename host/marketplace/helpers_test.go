package marketplace

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/internal/answerschema"
	"github.com/microengine/microengine/shared"
)

const testSecret = "s3cret"

// fakeMarket plays the marketplace's side: it serves artifacts and takes
// answers at /respond/{id}.
type fakeMarket struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	artifacts map[string][]byte
	// failFirst makes the first N POSTs to each response URL fail with 503.
	failFirst int
	// refuseFirst makes the first N POSTs to each response URL fail with
	// 400: refused for good, not retried.
	refuseFirst int
	posts       map[string]int
	answers     chan postedAnswer
	slowFetch   time.Duration
	// holdAnswers, when set, holds every POST of an answer until it is
	// closed (or the poster gives up on it).
	holdAnswers chan struct{}
}

type postedAnswer struct {
	ID   string
	Body map[string]json.RawMessage
	Raw  []byte
	At   time.Time
}

func newFakeMarket(t *testing.T) *fakeMarket {
	m := &fakeMarket{t: t, artifacts: map[string][]byte{}, posts: map[string]int{}, answers: make(chan postedAnswer, 4096)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /artifacts/{name}", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		data, ok := m.artifacts[r.PathValue("name")]
		slow := m.slowFetch
		m.mu.Unlock()
		if slow > 0 {
			select {
			case <-time.After(slow):
			case <-r.Context().Done():
				return
			}
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	})
	mux.HandleFunc("GET /redirect/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		if n == 0 {
			w.Write([]byte("end of the chain"))
			return
		}
		http.Redirect(w, r, "/redirect/"+strconv.Itoa(n-1), http.StatusFound)
	})
	mux.HandleFunc("POST /respond/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		raw, _ := io.ReadAll(r.Body)
		// Counted as it arrives: a POST its sender gave up on while it
		// was held counts too, as it would at a marketplace that took it.
		m.mu.Lock()
		m.posts[id]++
		n := m.posts[id]
		fail := n <= m.failFirst
		refuse := n <= m.refuseFirst
		hold := m.holdAnswers
		m.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		if fail {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		if refuse {
			http.Error(w, "refused", http.StatusBadRequest)
			return
		}
		var body map[string]json.RawMessage
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Errorf("answer for %s is not JSON: %v: %s", id, err, raw)
		}
		// Every answer against the protocol's schema; that a bid comes in
		// the assertion phase only is each test's to check.
		kind := answerschema.Vote
		if _, ok := body["bid"]; ok {
			kind = answerschema.Assertion
		}
		if err := answerschema.Check(raw, kind); err != nil {
			t.Errorf("answer for %s: %v: %s", id, err, raw)
		}
		m.answers <- postedAnswer{ID: id, Body: body, Raw: raw, At: time.Now()}
		w.WriteHeader(http.StatusOK)
	})
	m.srv = httptest.NewServer(mux)
	t.Cleanup(m.srv.Close)
	return m
}

func (m *fakeMarket) put(name string, data []byte) string {
	m.mu.Lock()
	m.artifacts[name] = data
	m.mu.Unlock()
	return m.srv.URL + "/artifacts/" + name
}

func (m *fakeMarket) postCount(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.posts[id]
}

// wait returns the next answer, failing the test after timeout.
func (m *fakeMarket) wait(timeout time.Duration) postedAnswer {
	m.t.Helper()
	select {
	case a := <-m.answers:
		return a
	case <-time.After(timeout):
		m.t.Fatalf("no answer within %s", timeout)
		return postedAnswer{}
	}
}

func (m *fakeMarket) none(within time.Duration) {
	m.t.Helper()
	select {
	case a := <-m.answers:
		m.t.Fatalf("unexpected answer for %s: %s", a.ID, a.Raw)
	case <-time.After(within):
	}
}

// bountyJSON builds a bounty body; extra overrides or adds fields.
func (m *fakeMarket) bountyJSON(id int64, uri string, expiresIn time.Duration, extra map[string]any) []byte {
	b := map[string]any{
		"id":            id,
		"artifact_type": "file",
		"artifact_uri":  uri,
		"expiration":    time.Now().Add(expiresIn).UTC().Format("2006-01-02T15:04:05.000000"),
		"response_url":  m.srv.URL + "/respond/" + strconv.FormatInt(id, 10),
		"phase":         "assertion",
		"rules":         map[string]any{"min_allowed_bid": json.Number("62500000000000000"), "max_allowed_bid": json.Number("1000000000000000000")},
	}
	for k, v := range extra {
		if v == nil {
			delete(b, k)
		} else {
			b[k] = v
		}
	}
	raw, err := json.Marshal(b)
	if err != nil {
		m.t.Fatal(err)
	}
	return raw
}

// eicarScanner is a fake engine: content containing "EICAR" is malicious
// (confidence 1), anything else benign (confidence 0.5).
func eicarScanner() ScanFunc {
	return func(ctx context.Context, a engine.Artifact) engine.Result {
		data, err := io.ReadAll(io.NewSectionReader(a.Content, 0, a.Size))
		if err != nil {
			return engine.Result{Verdict: shared.VerdictUnknown, Reason: err.Error()}
		}
		pr := engine.PluginResult{Name: "fake", Version: "1.2.3", VendorVersion: "9.9", SignaturesVersion: "42", Supported: true}
		if bytes.Contains(data, []byte("EICAR")) {
			pr.Verdict, pr.Confidence, pr.MalwareFamily = shared.VerdictMalicious, 1, "EICAR-Test-File"
		} else {
			pr.Verdict, pr.Confidence = shared.VerdictBenign, 0.5
		}
		return engine.Compose([]engine.PluginResult{pr})
	}
}

type testEngine struct {
	svc    *Service
	srv    *httptest.Server
	market *fakeMarket
	dir    string
	reg    *prometheus.Registry
	cfg    config.Marketplace
}

type engineOption func(*config.Marketplace, *Options)

func newTestEngine(t *testing.T, scanner Scanner, mods ...engineOption) *testEngine {
	t.Helper()
	return startTestEngine(t, t.TempDir(), newFakeMarket(t), scanner, mods...)
}

func startTestEngine(t *testing.T, dir string, market *fakeMarket, scanner Scanner, mods ...engineOption) *testEngine {
	t.Helper()
	// Downloads are from loopback and take milliseconds; the tests that
	// time a fetch out set their own timeout. 10 s leaves a loaded
	// machine room (with 2 s, a stalled download was answered unknown).
	cfg := config.Marketplace{WebhookSecrets: []string{testSecret}, SafetyMargin: 200 * time.Millisecond, FetchTimeout: 10 * time.Second}
	reg := prometheus.NewRegistry()
	opts := Options{DataDir: dir, Scanner: scanner, Registry: reg, Version: "0.1.0-test", ShutdownGrace: 2 * time.Second}
	for _, m := range mods {
		m(&cfg, &opts)
	}
	opts.Config = &cfg
	svc, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEngine{svc: svc, market: market, dir: dir, reg: reg, cfg: cfg}
	e.srv = httptest.NewServer(svc.Handler())
	svc.Start()
	var once sync.Once
	t.Cleanup(func() { once.Do(e.stop) })
	return e
}

func (e *testEngine) stop() {
	e.srv.Close()
	e.svc.Stop()
}

// send posts a signed webhook and returns the status and body.
func (e *testEngine) send(t *testing.T, event string, body []byte, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/", bytes.NewReader(body))
	req.Header.Set(HeaderEvent, event)
	req.Header.Set(HeaderSignature, Sign(testSecret, body))
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(raw))
}

func (e *testEngine) accept(t *testing.T, body []byte) {
	t.Helper()
	if code, reply := e.send(t, "bounty", body, nil); code != http.StatusAccepted {
		t.Fatalf("bounty: HTTP %d %s", code, reply)
	}
}

// record waits until the bounty's record leaves the open state: up to
// 10 s, room for a loaded machine, returning as soon as it has.
func (e *testEngine) record(t *testing.T, id int64, phase Phase) Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r, ok, err := e.svc.store.Get(bountyKey(id, phase))
		if err != nil {
			t.Fatal(err)
		}
		if ok && r.State != StateOpen {
			return r
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("bounty %d/%s still open after 10s", id, phase)
	return Record{}
}

// counter reads a counter's value from the registry.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metric
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// waitCounter waits for a counter to reach want: metrics are updated just
// after the store records an outcome. Up to 10 s, room for a loaded
// machine, returning as soon as it has.
func waitCounter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := counter(t, reg, name, labels)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func str(raw json.RawMessage) string {
	var s string
	json.Unmarshal(raw, &s)
	return s
}
