package marketplace

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/host/config"
)

// Inputs a stranger or a misbehaving peer controls must not break the
// engine's promises: nothing accepted is lost, every accepted bounty is
// answered before it expires.

// TestReusedDeliveryIDIsANewBounty: the delivery header is not signed, so
// a signed bounty that reuses another bounty's delivery id is still stored
// and answered.
func TestReusedDeliveryIDIsANewBounty(t *testing.T) {
	e := newTestEngine(t, eicarScanner())
	uri := e.market.put("c", []byte("c"))
	hdr := map[string]string{HeaderDelivery: "delivery-of-90000"}
	for _, id := range []int64{90000, 90001} {
		if code, reply := e.send(t, "bounty", e.market.bountyJSON(id, uri, time.Minute, nil), hdr); code != 202 {
			t.Fatalf("bounty %d: %d %s", id, code, reply)
		}
	}
	got := map[string]bool{}
	for range 2 {
		got[e.market.wait(5*time.Second).ID] = true
	}
	if !got["90000"] || !got["90001"] {
		t.Errorf("answered %v, want 90000 and 90001", got)
	}
	// The same delivery id for the same bounty is still a redelivery.
	e.send(t, "bounty", e.market.bountyJSON(90001, uri, time.Minute, nil), hdr)
	e.market.none(200 * time.Millisecond)
}

// TestFarFutureExpiration: expirations past the nanosecond index's end
// (2262) are bounded, never wrapped into the past.
func TestFarFutureExpiration(t *testing.T) {
	s := openEmbedded(t, t.TempDir(), config.DefaultRetention)
	defer s.Close()
	now := time.Now()
	for i, year := range []int{2300, 9999} {
		exp := time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC)
		if _, err := s.Put(context.Background(), testBounty(int64(i), exp), "", now); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	s.OpenKeysAfter(nil, func(key []byte, exp time.Time) bool {
		n++
		if exp.Before(now) {
			t.Errorf("bounty %x: indexed expiration %s is in the past", key, exp)
		}
		return true
	})
	if n != 2 {
		t.Errorf("%d open, want 2", n)
	}

	e := newTestEngine(t, eicarScanner())
	e.accept(t, e.market.bountyJSON(7, e.market.put("e", []byte("EICAR")), 0, map[string]any{"expiration": "9999-12-31T23:59:59"}))
	if a := e.market.wait(5 * time.Second); str(a.Body["verdict"]) != "malicious" {
		t.Errorf("answer %s", a.Raw)
	}
	r := e.record(t, 7, PhaseAssertion)
	if limit := time.Now().Add(maxBountyLifetime); r.Bounty.Expiration.After(limit) {
		t.Errorf("stored expiration %s, want at most %s", r.Bounty.Expiration, limit)
	}
}

// deepMetadata nests arrays n levels: past encoding/json's limit of
// 10,000 once inside a record.
func deepMetadata(n int) string {
	return `{"x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`
}

// TestStoreNeverHoldsWhatItCannotReadBack: a bounty whose metadata would
// not read back is stored without it and marked damaged; a redelivery
// finds it.
func TestStoreNeverHoldsWhatItCannotReadBack(t *testing.T) {
	s := openEmbedded(t, t.TempDir(), config.DefaultRetention)
	defer s.Close()
	b := testBounty(1, time.Now().Add(time.Minute))
	// Ten thousand levels with the body's own: readable in a
	// webhook body, one level too deep inside a record.
	b.Metadata = json.RawMessage(deepMetadata(9998))
	if err := json.Unmarshal(b.Metadata, new(any)); err != nil {
		t.Fatalf("the metadata itself should decode: %v", err)
	}
	ctx := context.Background()
	if isNew, err := s.Put(ctx, b, "d1", time.Now()); err != nil || !isNew {
		t.Fatalf("put: %v %v", isNew, err)
	}
	r, ok, err := s.Get(b.Key())
	if err != nil || !ok || r.Damaged == "" || r.Bounty.Metadata != nil {
		t.Fatalf("get: ok=%v err=%v damaged=%q metadata=%d bytes", ok, err, r.Damaged, len(r.Bounty.Metadata))
	}
	if isNew, err := s.Put(ctx, b, "d2", time.Now()); err != nil || isNew {
		t.Errorf("redelivery: new=%v err=%v", isNew, err)
	}
	if done, err := s.Finish(ctx, b.Key(), Outcome{State: StateAnswered, At: time.Now()}); err != nil || !done {
		t.Errorf("finish: %v %v", done, err)
	}
}

// runEngine runs the whole service (Run) on loopback and returns the
// webhook address and the data directory.
func runEngine(t *testing.T, cfg config.Marketplace) (addr, dir string) {
	t.Helper()
	dir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.WebhookSecrets = []string{testSecret}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: &cfg, DataDir: dir, Scanner: eicarScanner(), OnListen: func(a string) { addrs <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	return addr, dir
}

// rawRequest opens a connection and sends a webhook's headers and the
// first part of its body, then holds the connection open.
func rawRequest(t *testing.T, addr string, contentLength int, sent []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nX-POLYSWARM-EVENT: bounty\r\nX-POLYSWARM-SIGNATURE: %064d\r\nContent-Length: %d\r\n\r\n", 0, contentLength)
	c.Write(sent)
	return c
}

func statusOf(t *testing.T, c net.Conn) int {
	t.Helper()
	return statusWithin(c, 5*time.Second)
}

// statusWithin is the status the engine answered on c within d, or 0.
func statusWithin(c net.Conn, d time.Duration) int {
	c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0 // closed without an answer
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestUnsignedInputIsBounded: bodies over the limit are refused before
// they are read; only max_webhooks_in_flight bodies are read at once (the
// rest 503 at once); connections beyond max_connections get 503 at once;
// and a signed ping still gets through once the slow bodies time out.
func TestUnsignedInputIsBounded(t *testing.T) {
	addr, _ := runEngine(t, config.Marketplace{MaxBodySize: 1000, MaxWebhooksInFlight: 2, MaxConnections: 4})

	// Declared over the limit: 413 without waiting for the body.
	big := rawRequest(t, addr, 1<<20-1, []byte("{"))
	if code := statusOf(t, big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("declared 1 MiB body: %d, want 413 at once", code)
	}
	// Two slow bodies hold the two buffers; a third is refused at once.
	slow := []net.Conn{rawRequest(t, addr, 900, []byte("{")), rawRequest(t, addr, 900, []byte("{")), rawRequest(t, addr, 900, []byte("{"))}
	// The third waits minBodyHold for a buffer, then takes one over from
	// the oldest: the 503 comes about 250 ms in, on whichever connection
	// held that buffer. All three are read at once, for 2 s each (bodies
	// time out after 5 s); read one after the other for 1 s each, a 503 on
	// the first one read had to come within that second.
	statuses := make(chan int, len(slow))
	for _, c := range slow {
		go func() { statuses <- statusWithin(c, 2*time.Second) }()
	}
	var codes []int
	for range slow {
		codes = append(codes, <-statuses)
	}
	slices.Sort(codes)
	if fmt.Sprint(codes) != "[0 0 503]" {
		t.Errorf("three slow bodies with two buffers: %v, want two still reading and one 503", codes)
	}
	// Four connections are open (two slow, two idle): a fifth is refused.
	idle1, _ := net.Dial("tcp", addr)
	defer idle1.Close()
	idle2, _ := net.Dial("tcp", addr)
	defer idle2.Close()
	over, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if code := statusOf(t, over); code != http.StatusServiceUnavailable {
		t.Errorf("connection over the limit: %d, want 503 at once", code)
	}
}

// TestSlowBodiesCannotStarveSignedWebhooks: strangers trickling forged
// bodies held every body buffer for the whole body timeout, so a hundred
// of them, a few bytes a second, kept every signed bounty at 503. A body
// still arriving after minBodyHold gives its buffer up to a newcomer
// (503, retry), so signed webhooks get through while the slow ones stay.
func TestSlowBodiesCannotStarveSignedWebhooks(t *testing.T) {
	addr, _ := runEngine(t, config.Marketplace{MaxBodySize: 1000, MaxWebhooksInFlight: 2, MaxConnections: 64})
	var slow []net.Conn
	for range 4 {
		slow = append(slow, rawRequest(t, addr, 900, []byte("{")))
	}
	// Well within the 5 s a body may take: the slow bodies are still
	// being read meanwhile, and before this fix every ping got 503.
	deadline := time.Now().Add(3 * time.Second)
	var codes []int
	for {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", nil)
		req.Header.Set(HeaderEvent, "ping")
		req.Header.Set(HeaderSignature, Sign(testSecret, nil))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("signed pings while slow bodies held the buffers: %v, want one 200 within 3s", codes)
		}
		time.Sleep(50 * time.Millisecond) // the marketplace's retry
	}
	// A slow body that gave its buffer up was told to retry. Four slow
	// bodies against two buffers: whichever order the server took them
	// in (the ping may have found a buffer free before the slow bodies'
	// headers were read), a waiting one stops a holder once it has had
	// minBodyHold. A body that merely times out (after 5 s) is answered
	// 400, so a 503 within 3 s can only be that taking over.
	statuses := make(chan int, len(slow))
	for _, c := range slow {
		go func() { statuses <- statusWithin(c, 3*time.Second) }()
	}
	var got []int
	for range slow {
		if got = append(got, <-statuses); got[len(got)-1] == http.StatusServiceUnavailable {
			break
		}
	}
	if !slices.Contains(got, http.StatusServiceUnavailable) {
		t.Errorf("slow bodies answered %v within 3s, want one 503 (its buffer taken over)", got)
	}
}

// TestBurstOfWebhooksIsTaken: the marketplace may send many webhooks at
// once. With no buffer free they were refused 503 at once (1,000 signed
// bounties at once against 64 buffers: 892 refused); fast bodies free
// their buffers within milliseconds, so a newcomer waits a moment for one.
func TestBurstOfWebhooksIsTaken(t *testing.T) {
	market := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("clean")) }))
	t.Cleanup(market.Close) // after the engine's own cleanup
	addr, _ := runEngine(t, config.Marketplace{MaxWebhooksInFlight: 2, MaxConnections: 256})
	const n = 64
	codes := make(chan int, n)
	var wg sync.WaitGroup
	exp := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each is committed before its 202: a body holds its buffer
			// for a few milliseconds.
			body := []byte(fmt.Sprintf(`{"id":%d,"artifact_type":"file","artifact_uri":%q,"expiration":%q,"response_url":%q}`, i, market.URL+"/a", exp, market.URL+"/r"))
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", bytes.NewReader(body))
			req.Header.Set(HeaderEvent, "bounty")
			req.Header.Set(HeaderSignature, Sign(testSecret, body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- -1
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	refused := 0
	for c := range codes {
		if c != http.StatusAccepted {
			refused++
		}
	}
	if refused > 0 {
		t.Errorf("%d of %d signed bounties sent at once refused, want none", refused, n)
	}
}

// TestSlowHeadersCannotStarveSignedWebhooks: connections that send their
// headers a byte at a time held every connection slot for the whole
// header timeout (1,100 of them at a byte a second: half the signed
// bounties refused 503). At the limit, a connection that has been idle or
// reading headers for minConnHold gives its slot up to a newcomer.
func TestSlowHeadersCannotStarveSignedWebhooks(t *testing.T) {
	addr, _ := runEngine(t, config.Marketplace{MaxConnections: 4})
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\n") // and the rest never comes
	}
	// Well within the 10 s headers may take: before this fix every ping
	// was refused meanwhile.
	deadline := time.Now().Add(3 * time.Second)
	var codes []int
	for {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", nil)
		req.Header.Set(HeaderEvent, "ping")
		req.Header.Set(HeaderSignature, Sign(testSecret, nil))
		resp, err := http.DefaultClient.Do(req)
		code := -1
		if err == nil {
			resp.Body.Close()
			code = resp.StatusCode
		}
		codes = append(codes, code)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("signed pings while slow headers held every connection: %v, want one 200 within 3s", codes)
		}
		time.Sleep(50 * time.Millisecond) // the marketplace's retry
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsOnTheirOwnListener: /metrics answers on metrics_listen and
// not on the webhook port; /healthz stays on the webhook port.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	addr, dir := runEngine(t, config.Marketplace{MetricsListen: "127.0.0.1:0", MetricsListenSet: true})
	get := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("http://" + addr + "/metrics"); code == http.StatusOK {
		t.Errorf("webhook port serves /metrics: %d", code)
	}
	if code := get("http://" + addr + "/healthz"); code != http.StatusOK {
		t.Errorf("webhook port /healthz: %d", code)
	}
	var maddr []byte
	waitFor(t, func() bool {
		var err error
		maddr, err = os.ReadFile(filepath.Join(dir, MetricsAddrFile))
		return err == nil
	})
	if code := get("http://" + strings.TrimSpace(string(maddr)) + "/metrics"); code != http.StatusOK {
		t.Errorf("metrics port /metrics: %d", code)
	}
}

// TestSweepsRotate: bounties a sweep cannot move on (here: the queues are
// full) do not fill every sweep's batch; the next sweep starts after them.
func TestSweepsRotate(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	dir := t.TempDir()
	market := newFakeMarket(t)
	cfg := config.Marketplace{WebhookSecrets: []string{testSecret}, QueueSize: 1, Workers: 1}
	svc, err := New(Options{Config: &cfg, DataDir: dir, Scanner: eicarScanner(),
		Logger: hclog.New(&hclog.LoggerOptions{Output: lockedBuilder{&mu, &logs}, Level: hclog.Warn})})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.store.Close()
	svc.sweepBatch = 4
	const n = 12
	for i := range n {
		b, err := ParseBounty(market.bountyJSON(int64(800+i), "http://x/a", time.Minute+time.Duration(i)*time.Second, nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.store.Put(context.Background(), b, "", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// No workers run: the first sweep fills both queues (one each), and
	// every other bounty finds them full.
	for range 4 {
		svc.sweep(false)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 2; i < n; i++ {
		if !strings.Contains(logs.String(), fmt.Sprintf("bounty=%d ", 800+i)) {
			t.Errorf("bounty %d was never looked at by 4 sweeps of 4", 800+i)
		}
	}
}

type lockedBuilder struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (l lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// TestRefusalsCloseTheConnection: a forged webhook does not leave an idle
// keep-alive connection behind to hold one of max_connections.
func TestRefusalsCloseTheConnection(t *testing.T) {
	addr, _ := runEngine(t, config.Marketplace{})
	c := rawRequest(t, addr, 2, []byte("{}"))
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged signature: %d", resp.StatusCode)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("the connection stays open after a refusal: %v", err)
	}
}

// TestSweepFinishesAnUndecodableRecord: a stored record that cannot be read
// at all is recorded failed by the sweep, not retried every second.
func TestSweepFinishesAnUndecodableRecord(t *testing.T) {
	market := newFakeMarket(t)
	cfg := config.Marketplace{WebhookSecrets: []string{testSecret}}
	svc, err := New(Options{Config: &cfg, DataDir: t.TempDir(), Scanner: eicarScanner(), Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.store.Close()
	b, err := ParseBounty(market.bountyJSON(900, "http://x/a", time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := svc.store.Put(ctx, b, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.store.records.Put(ctx, hexKey(b.Key()), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	// As after a restart: the engine that stored the record remembers it
	// as it wrote it, and reads it only once it has forgotten it.
	svc.store.forget(hexKey(b.Key()))
	if _, _, err := svc.store.Get(b.Key()); !errors.Is(err, errUndecodable) {
		t.Fatalf("Get of a garbled record: %v", err)
	}
	svc.sweep(false)
	r, ok, err := svc.store.Get(b.Key())
	if err != nil || !ok {
		t.Fatalf("after the sweep: ok %v, %v", ok, err)
	}
	if r.State != StateFailed {
		t.Errorf("an undecodable record is %s after the sweep, want failed", r.State)
	}
}
