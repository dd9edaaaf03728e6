//go:build e2e

// Package e2e runs the real binaries together: the host (`microengine
// run`), both plugins, a private clamd on the repo's signatures, and the
// marketplace's side played by httptest servers speaking the webhook
// protocol. Run with `make e2e` (go test -tags e2e ./test/e2e/...).
package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/answerschema"
	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/internal/testbin"
)

const secret = "e2e-webhook-secret"

// binaries built once for the whole run.
var bins struct {
	host, eicarV1, eicarV2, clamavV1, clamavV2 string
	crasher                                    string // panics on content holding "CRASH-ME"
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "e2e-bins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, b := range []struct {
		dst      *string
		name     string
		pkg      string
		versionX string
	}{
		{&bins.host, "microengine", "./host/cmd/microengine", ""},
		{&bins.eicarV1, "eicar-v1", "./plugins/eicar", "main.version=1.0.0"},
		{&bins.eicarV2, "eicar-v2", "./plugins/eicar", "main.version=2.0.0"},
		{&bins.clamavV1, "clamav-v1", "./plugins/clamav", ""},
		{&bins.clamavV2, "clamav-v2", "./plugins/clamav", clamavVersionFlag + "=9.9.9"},
		{&bins.crasher, "crasher", "./internal/testplugins/crasher", ""},
	} {
		var xs []string
		if b.versionX != "" {
			xs = append(xs, b.versionX)
		}
		if *b.dst, err = testbin.Build(dir, b.name, b.pkg, xs...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// marketplace plays the marketplace's side: it serves artifacts and takes
// answers at response URLs.
type marketplace struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	artifacts map[string][]byte
	answers   map[string][]answer // by bounty key
	failFirst map[string]int      // answers to refuse with 500 before accepting
	hold      chan struct{}       // /hold/ blocks until closed
	holdHits  atomic.Int64
	notify    chan struct{}
}

type answer struct {
	Verdict  string          `json:"verdict"`
	Bid      json.Number     `json:"bid"`
	HasBid   bool            `json:"-"`
	Metadata json.RawMessage `json:"metadata"`
	RawBid   string          `json:"-"`
	At       time.Time       `json:"-"`
}

func newMarketplace(t *testing.T) *marketplace {
	m := &marketplace{
		t: t, artifacts: map[string][]byte{}, answers: map[string][]answer{},
		failFirst: map[string]int{}, hold: make(chan struct{}), notify: make(chan struct{}, 1),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /artifact/{name}", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		b, ok := m.artifacts[r.PathValue("name")]
		m.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	})
	mux.HandleFunc("GET /hold/{name}", func(w http.ResponseWriter, r *http.Request) {
		m.holdHits.Add(1)
		select {
		case <-m.hold:
		case <-r.Context().Done():
			return
		}
		m.mu.Lock()
		b := m.artifacts[r.PathValue("name")]
		m.mu.Unlock()
		w.Write(b)
	})
	mux.HandleFunc("POST /answer/{key}", func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("key")
		body, _ := io.ReadAll(r.Body)
		m.mu.Lock()
		if m.failFirst[key] > 0 {
			m.failFirst[key]--
			m.mu.Unlock()
			http.Error(w, "try again", http.StatusInternalServerError)
			return
		}
		var raw map[string]json.RawMessage
		var a answer
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := json.Unmarshal(body, &raw); err != nil || dec.Decode(&a) != nil {
			m.mu.Unlock()
			t.Errorf("answer for %s is not JSON: %s", key, body)
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		kind := answerschema.Vote
		if rb, ok := raw["bid"]; ok {
			a.HasBid, a.RawBid = true, string(rb)
			kind = answerschema.Assertion
		}
		// Every answer against the protocol's schema; that a bid comes in
		// the assertion phase only is each test's to check.
		if err := answerschema.Check(body, kind); err != nil {
			t.Errorf("answer for %s: %v: %s", key, err, body)
		}
		a.At = time.Now()
		m.answers[key] = append(m.answers[key], a)
		m.mu.Unlock()
		select {
		case m.notify <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusOK)
	})
	m.srv = httptest.NewServer(mux)
	t.Cleanup(m.srv.Close)
	return m
}

func (m *marketplace) put(name string, content []byte) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.artifacts[name] = content
	return m.srv.URL + "/artifact/" + name
}

func (m *marketplace) answersFor(key string) []answer {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]answer(nil), m.answers[key]...)
}

// waitAnswer waits for the first answer to a bounty.
func (m *marketplace) waitAnswer(key string, within time.Duration) answer {
	m.t.Helper()
	deadline := time.After(within)
	for {
		if as := m.answersFor(key); len(as) > 0 {
			return as[0]
		}
		select {
		case <-m.notify:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			m.t.Fatalf("no answer for bounty %s within %s", key, within)
		}
	}
}

type bounty struct {
	ID           int64             `json:"id"`
	ArtifactType string            `json:"artifact_type"`
	ArtifactURI  string            `json:"artifact_uri"`
	Expiration   string            `json:"expiration"`
	ResponseURL  string            `json:"response_url"`
	Phase        string            `json:"phase"`
	SHA256       string            `json:"sha256,omitempty"`
	Mimetype     string            `json:"mimetype,omitempty"`
	Metadata     map[string]any    `json:"metadata,omitempty"`
	Rules        map[string]uint64 `json:"rules,omitempty"`
	Duration     int               `json:"duration"`
	TaskedAt     string            `json:"tasked_at"`
}

var bountyIDs atomic.Int64

// newBounty makes an assertion bounty for content served by m; its key
// names its response URL.
func (m *marketplace) newBounty(content []byte, expiresIn time.Duration) (bounty, string) {
	id := 1_000_000 + bountyIDs.Add(1)
	key := fmt.Sprint(id)
	uri := m.put(key, content)
	sum := sha256.Sum256(content)
	return bounty{
		ID: id, ArtifactType: "FILE", ArtifactURI: uri,
		Expiration:  time.Now().Add(expiresIn).UTC().Format(time.RFC3339Nano),
		ResponseURL: m.srv.URL + "/answer/" + key, Phase: "assertion",
		SHA256: hex.EncodeToString(sum[:]), Mimetype: "application/octet-stream",
		Metadata: map[string]any{"source": "e2e"},
		Rules:    map[string]uint64{"min_allowed_bid": 62_500_000_000_000_000, "max_allowed_bid": 1_000_000_000_000_000_000},
		Duration: int(expiresIn.Seconds()), TaskedAt: time.Now().UTC().Format(time.RFC3339),
	}, key
}

// engineProc is a running `microengine run`.
type engineProc struct {
	t       testing.TB
	dir     string
	cfg     string
	url     string
	cmd     *exec.Cmd
	log     *bytes.Buffer
	logMu   *sync.Mutex
	done    chan struct{}
	exitErr error
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// engineDir makes a folder with engine.hcl and copies of the plugin
// binaries (so a test can replace them as an operator would).
func engineDir(t *testing.T, clamd *devclamd.Daemon, extraMarketplace string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "e2e-engine-") // short: the admin socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.MkdirAll(filepath.Join(dir, "plugins"), 0o755)
	install(t, bins.eicarV1, filepath.Join(dir, "plugins", "microengine-plugin-eicar"))
	install(t, bins.clamavV1, filepath.Join(dir, "plugins", "microengine-plugin-clamav"))
	cfg := fmt.Sprintf(`engine {
  data_dir        = "./data"
  log_level       = "debug"
  health_interval = "500ms"
  drain_timeout   = "20s"
}
plugin "eicar" {
  path    = "./plugins/microengine-plugin-eicar"
  timeout = "10s"
}
plugin "clamav" {
  path    = "./plugins/microengine-plugin-clamav"
  timeout = "10s"
  config {
    address = %q
  }
}
marketplace {
  listen         = "127.0.0.1:0"
  webhook_secret = %q
  metrics_listen = "127.0.0.1:0"
  fetch_timeout  = "2s"
  safety_margin  = "500ms"
%s
}
`, clamd.Address(), secret, extraMarketplace)
	if err := os.WriteFile(filepath.Join(dir, "engine.hcl"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// eicarEngineDir makes a folder with the eicar plugin alone and an
// engine.hcl logging at logLevel, with no metrics listener; extra is
// appended to engine.hcl (a queue block, say).
func eicarEngineDir(t testing.TB, logLevel, extra string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "e2e-eicar-") // short: the admin socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.MkdirAll(filepath.Join(dir, "plugins"), 0o755)
	install(t, bins.eicarV1, filepath.Join(dir, "plugins", "microengine-plugin-eicar"))
	cfg := fmt.Sprintf(`engine {
  data_dir  = "./data"
  log_level = %q
}
plugin "eicar" {
  path = "./plugins/microengine-plugin-eicar"
}
marketplace {
  listen         = "127.0.0.1:0"
  webhook_secret = %q
  metrics_listen = "off"
}
%s`, logLevel, secret, extra)
	if err := os.WriteFile(filepath.Join(dir, "engine.hcl"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// install copies a binary into place the atomic way: beside, then rename.
func install(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".new", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

func startEngine(t testing.TB, dir string) *engineProc {
	t.Helper()
	return startEngineArgs(t, dir)
}

// startEngineArgs is startEngine with more arguments to `run`.
func startEngineArgs(t testing.TB, dir string, args ...string) *engineProc {
	t.Helper()
	addrFile := filepath.Join(dir, "data", "listen.addr")
	os.Remove(addrFile)
	e := spawnEngine(t, dir, "engine", args...)
	e.waitReady("listen", func() bool {
		b, err := os.ReadFile(addrFile)
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			return false
		}
		e.url = "http://" + strings.TrimSpace(string(b))
		return true
	})
	return e
}

// spawnEngine starts `microengine run -config dir/engine.hcl args...`,
// stopped when t ends, its log shown under what if t failed.
func spawnEngine(t testing.TB, dir, what string, args ...string) *engineProc {
	t.Helper()
	e := &engineProc{t: t, dir: dir, cfg: filepath.Join(dir, "engine.hcl"), log: &bytes.Buffer{}, logMu: &sync.Mutex{}, done: make(chan struct{})}
	e.cmd = exec.Command(bins.host, append([]string{"run", "-config", e.cfg}, args...)...)
	e.cmd.Stdout = lockedWriter{e.logMu, e.log}
	e.cmd.Stderr = lockedWriter{e.logMu, e.log}
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		e.exitErr = e.cmd.Wait()
		close(e.done)
	}()
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", what, e.logs())
		}
	})
	return e
}

// readyWait bounds an engine's start in these tests: past the minute an
// engine itself waits for a forming cluster to place its replicas (and
// for JetStream during an election), so a slow start fails the engine,
// not the test's patience first. A passing start does not wait for it.
const readyWait = 70 * time.Second

// waitReady polls ready until it holds; the test fails if the engine
// exits first or is not ready (doing what) within readyWait.
func (e *engineProc) waitReady(what string, ready func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(readyWait)
	for !ready() {
		select {
		case <-e.done:
			e.t.Fatalf("engine exited at start: %v\n%s", e.exitErr, e.logs())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("engine did not %s within %s:\n%s", what, readyWait, e.logs())
		}
	}
}

func (e *engineProc) logs() string {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	return e.log.String()
}

func (e *engineProc) stop() {
	select {
	case <-e.done:
		return
	default:
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(20 * time.Second):
		e.cmd.Process.Kill()
		<-e.done
	}
}

func (e *engineProc) kill9() {
	e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.done
}

// post sends a webhook. sig "" signs correctly; "-" sends none.
func (e *engineProc) post(event, delivery string, body []byte, sig string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, e.url+"/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-POLYSWARM-EVENT", event)
	req.Header.Set("X-POLYSWARM-DELIVERY", delivery)
	switch sig {
	case "":
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		req.Header.Set("X-POLYSWARM-SIGNATURE", hex.EncodeToString(mac.Sum(nil)))
	case "-":
	default:
		req.Header.Set("X-POLYSWARM-SIGNATURE", sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("POST webhook: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var deliveries atomic.Int64

func (e *engineProc) sendBounty(b bounty) {
	e.t.Helper()
	body, _ := json.Marshal(b)
	code, resp := e.post("bounty", fmt.Sprintf("delivery-%d", deliveries.Add(1)), body, "")
	if code != http.StatusAccepted || !strings.Contains(resp, "ACCEPTED") {
		e.t.Fatalf("bounty %d: %d %s; want 202 ACCEPTED", b.ID, code, resp)
	}
}

func (e *engineProc) metric(name string) string {
	e.t.Helper()
	// /metrics has its own listener (metrics_listen), apart from webhooks.
	addr, err := os.ReadFile(filepath.Join(e.dir, "data", "metrics.addr"))
	if err != nil {
		e.t.Fatalf("metrics address: %v", err)
	}
	resp, err := http.Get("http://" + strings.TrimSpace(string(addr)) + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
