package scanner

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/shared"
)

// TestPoolOfClamds runs scans over three real clamds, kills one and stops
// another (SIGSTOP) while the scans run. Scans in flight on them are
// retried on the one left, so none is lost; health shows each clamd.
func TestPoolOfClamds(t *testing.T) {
	var ds []*devclamd.Daemon
	var addrs []string
	for range 3 {
		d := devclamd.StartT(t, devclamd.Options{})
		ds = append(ds, d)
		addrs = append(addrs, fmt.Sprintf("%q", d.Address()))
	}
	s := configuredJSON(t, fmt.Sprintf(`{"address":[%s],"timeout":"20s"}`, strings.Join(addrs, ",")))
	defer syscall.Kill(ds[1].Pid(), syscall.SIGCONT)

	// The probes settle first (they run once per clamd), so that the
	// failures below meet scans, not probes.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if h, err := s.Health(ctx); err != nil || !strings.Contains(h.Message, ds[2].Address()) {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	for _, b := range s.current.Load().backends {
		if tr := b.settledTrust(ctx); tr.state != trustPassed {
			t.Fatalf("probes of %s: %+v", b.addr, tr)
		}
	}

	const workers, perWorker = 6, 15
	results := make(chan shared.Result, workers*perWorker)
	var wg sync.WaitGroup
	started := make(chan struct{})
	var once sync.Once
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				if i == 3 {
					once.Do(func() { close(started) })
				}
				// Unique binary content: clamd caches results by content.
				content := randomBytes(4096, uint64(w*1000+i+1))
				sctx, scancel := context.WithTimeout(context.Background(), 8*time.Second)
				r, err := s.Scan(sctx, file(content))
				scancel()
				if err != nil {
					t.Errorf("Scan: %v", err)
					continue
				}
				results <- r
			}
		}()
	}
	<-started
	ds[0].Kill()
	if err := syscall.Kill(ds[1].Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(results)
	benign, other := 0, 0
	for r := range results {
		if r.Verdict == shared.VerdictBenign {
			benign++
		} else {
			other++
			t.Errorf("lost a scan: %+v", r)
		}
	}
	t.Logf("%d benign, %d other", benign, other)

	h, err := s.Health(ctx)
	if err != nil || !h.Healthy {
		t.Errorf("Health with one clamd left = %+v, %v; want healthy", h, err)
	}
	for i, want := range []string{"down", "down", "PONG"} {
		line := lineFor(h.Message, ds[i].Address())
		if !strings.Contains(line, want) {
			t.Errorf("Health on clamd %d: %q, want %q", i, line, want)
		}
	}
	if len(h.Backends) != 3 {
		t.Fatalf("Health.Backends = %+v, want the three clamds", h.Backends)
	}
	for i, want := range []bool{false, false, true} {
		if b := h.Backends[i]; b.Name != ds[i].Address() || b.Healthy != want || b.InFlight != 0 {
			t.Errorf("Health.Backends[%d] = %+v, want %s healthy=%v, none in flight", i, b, ds[i].Address(), want)
		}
	}

	// All down: unknown, quickly for the dead ones.
	ds[2].Kill()
	r := scan(t, s, file([]byte("hello")))
	wantUnknown(t, r, "clamd")
	if h, _ := s.Health(ctx); h.Healthy {
		t.Errorf("Health with every clamd down = %+v", h)
	}
}

// lineFor is the part of a health message about one clamd.
func lineFor(msg, addr string) string {
	for _, part := range strings.Split(msg, "; clamd at ") {
		if strings.Contains(part, addr) {
			return part
		}
	}
	return ""
}

// TestStaleSignatures: a daily database older than max_signature_age makes
// health degraded and turns benign answers unknown; malicious stays.
func TestStaleSignatures(t *testing.T) {
	l := listenCounting(t, func(c net.Conn) { readInstream(c); c.Write([]byte("stream: OK\x00")) })
	l.version.Store("ClamAV 1.4.6/27800/Sun Nov  1 09:00:00 2026")
	at := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)

	for _, tt := range []struct {
		maxAge string
		want   shared.Verdict
	}{
		{"168h", shared.VerdictUnknown},
		{"720h", shared.VerdictBenign},
		{"0s", shared.VerdictBenign},
	} {
		t.Run(tt.maxAge, func(t *testing.T) {
			s := New(testLogger(t))
			s.now = func() time.Time { return at }
			if err := s.Configure(context.Background(), []byte(fmt.Sprintf(`{"address":%q,"max_signature_age":%q}`, l.address, tt.maxAge))); err != nil {
				t.Fatal(err)
			}
			defer s.current.Load().close()
			// Plain text: benign from any clamd that examined it.
			r := scan(t, s, file([]byte("plain text\n")))
			if r.Verdict != tt.want {
				t.Fatalf("%+v, want %s", r, tt.want)
			}
			if tt.want == shared.VerdictUnknown && (r.Metadata[shared.MetaComment] != shared.CommentSignaturesStale || !strings.Contains(r.Reason, "29 days") && !strings.Contains(r.Reason, "696h")) {
				t.Errorf("%+v, want %s and the age", r, shared.CommentSignaturesStale)
			}
			if r.Metadata[MetaSignaturesVersion] != "27800" {
				t.Errorf("metadata %v lacks the signatures version", r.Metadata)
			}
			h, err := s.Health(context.Background())
			stale := strings.Contains(h.Message, "more than max_signature_age")
			if err != nil || stale != (tt.want == shared.VerdictUnknown) || !strings.Contains(h.Message, "696h") {
				t.Errorf("Health = %+v, %v", h, err)
			}
		})
	}
}
