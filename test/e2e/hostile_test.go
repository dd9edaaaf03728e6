//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/internal/samples"
	"github.com/microengine/microengine/internal/testproc"
)

// floodRSSLimit is what the engine may hold resident while strangers
// flood its webhook port (issue: 1,000 such connections once took it from
// 27 MB to 1.21 GB, and 1.85 GB twenty seconds after they closed).
const floodRSSLimit = 96 << 20

// flood opens n connections to the engine's webhook port, each sending a
// bounty's headers with a forged signature and a body of 1 MiB − 1, as
// much of it as the engine takes, and holding the connection open. It
// returns once every connection has sent what it could; close ends them.
func flood(t testing.TB, url string, n int) (close func()) {
	t.Helper()
	addr := strings.TrimPrefix(url, "http://")
	const size = 1<<20 - 1
	chunk := bytes.Repeat([]byte("A"), 64<<10)
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return // refused: nothing held
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: engine\r\nContent-Type: application/json\r\n"+
				"X-POLYSWARM-EVENT: bounty\r\nX-POLYSWARM-DELIVERY: flood\r\nX-POLYSWARM-SIGNATURE: %064x\r\n"+
				"Content-Length: %d\r\n\r\n", 0xbad, size)
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			for sent := 0; sent < size; sent += len(chunk) {
				if _, err := c.Write(chunk[:min(len(chunk), size-sent)]); err != nil {
					return // the engine stopped reading: hold what was sent
				}
			}
		}()
	}
	wg.Wait()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
}

// rssSampler records the peak resident set of a process until stopped.
type rssSampler struct {
	stop, done chan struct{}
	peak       int64
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			s.peak = max(s.peak, testproc.MemoryStatus(pid, "VmRSS"))
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) end() int64 {
	close(s.stop)
	<-s.done
	return s.peak
}

// sendSignedDuringFlood sends a signed bounty as the marketplace does:
// a 503 (the engine is shedding load) is retried.
func sendSignedDuringFlood(t *testing.T, eng *engineProc, b bounty) {
	t.Helper()
	body, _ := json.Marshal(b)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, resp := eng.post("bounty", fmt.Sprintf("signed-%d", b.ID), body, "")
		if code == http.StatusAccepted {
			return
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("signed bounty during the flood: %d %s", code, resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUnsignedFloodStaysBounded: 1,000 connections sending forged 1 MiB
// bodies and holding on do not take the engine past 96 MiB resident,
// during or after, and a signed bounty sent meanwhile is accepted and
// answered.
func TestUnsignedFloodStaysBounded(t *testing.T) {
	clamd := devclamd.StartT(t, devclamd.Options{})
	market := newMarketplace(t)
	eng := startEngine(t, engineDir(t, clamd, ""))
	pid := eng.cmd.Process.Pid
	rss := sampleRSS(pid)

	done := make(chan func())
	go func() { done <- flood(t, eng.url, 1000) }()
	b, key := market.newBounty(samples.EICAR(), time.Minute)
	sendSignedDuringFlood(t, eng, b)
	closeFlood := <-done
	checkAssertion(t, market.waitAnswer(key, 30*time.Second), "malicious")
	during := rss.end()

	closeFlood()
	rss = sampleRSS(pid)
	// After: a second signed bounty, answered, while memory is watched.
	b2, key2 := market.newBounty(samples.EICAR(), time.Minute)
	eng.sendBounty(b2)
	checkAssertion(t, market.waitAnswer(key2, 30*time.Second), "malicious")
	after := rss.end()
	hwm := testproc.MemoryStatus(pid, "VmHWM")
	t.Logf("engine resident set: peak %d MiB during the flood, %d MiB after, high-water mark %d MiB",
		during>>20, after>>20, hwm>>20)
	if during > floodRSSLimit || after > floodRSSLimit || hwm > floodRSSLimit {
		t.Errorf("engine resident set over %d MiB: during %d MiB, after %d MiB, high-water %d MiB",
			floodRSSLimit>>20, during>>20, after>>20, hwm>>20)
	}
}

// BenchmarkUnsignedFlood reports the engine's peak resident set while
// 1,000 connections send forged 1 MiB bodies and hold on (the target is
// at most 96 MiB; TestUnsignedFloodStaysBounded checks it, with a signed
// bounty answered meanwhile). One iteration is one flood: use -benchtime 1x.
//
//	go test -tags e2e -run '^$' -bench UnsignedFlood -benchtime 1x ./test/e2e/
func BenchmarkUnsignedFlood(b *testing.B) {
	for range b.N {
		dir := eicarEngineDir(b, "warn", "")
		eng := startEngine(b, dir)
		pid := eng.cmd.Process.Pid
		before := testproc.MemoryStatus(pid, "VmRSS")
		rss := sampleRSS(pid)
		b.ResetTimer()
		closeFlood := flood(b, eng.url, 1000)
		b.StopTimer()
		during := rss.end()
		closeFlood()
		hwm := testproc.MemoryStatus(pid, "VmHWM")
		eng.stop()
		b.ReportMetric(float64(max(during, hwm))/(1<<20), "peak-rss-MiB")
		b.Logf("engine resident set %d MiB before the flood, peak %d MiB during 1,000 forged 1 MiB bodies (limit %d MiB)",
			before>>20, max(during, hwm)>>20, floodRSSLimit>>20)
	}
}
