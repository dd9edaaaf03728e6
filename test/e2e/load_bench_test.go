//go:build e2e

package e2e

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microengine/microengine/host/simulator"
	"github.com/microengine/microengine/internal/testproc"
)

// BenchmarkEngineLoad drives the real engine process (`microengine run`
// with the eicar plugin, its fsync'd store and its workers) with the
// simulator at a fixed rate and reports what a marketplace would see:
// bounties/s answered, p50/p99 bounty-to-answer latency, and the engine's
// and plugin's memory. One iteration is one run: use -benchtime 1x.
//
//	go test -tags e2e -run '^$' -bench EngineLoad -benchtime 1x ./test/e2e/
//
// MICROENGINE_LOAD_RATE (default 200/s) and MICROENGINE_LOAD_SECONDS
// (default 30) set the load; the soak is the same with 600 seconds.
//
// A run fails when a bounty is not sent, refused, answered wrong, late,
// twice or not at all, when more than maxUnknown of them are answered
// unknown (the eicar plugin has no backend to lose: an unknown is the
// engine running out of time or plugin), and when the engine's anonymous
// memory grows by more than growthBound between ten seconds in and the
// end.
func BenchmarkEngineLoad(b *testing.B) {
	benchEngine(b, envInt("MICROENGINE_LOAD_SECONDS", 30))
}

// BenchmarkEngineSoak is BenchmarkEngineLoad for ten minutes: memory may
// grow by what the bounties stored meanwhile cost, and no more (no queue,
// id set or buffer that grows without bound).
func BenchmarkEngineSoak(b *testing.B) {
	benchEngine(b, envInt("MICROENGINE_SOAK_SECONDS", 600))
}

const (
	// maxUnknown is the share of bounties that may be answered unknown.
	// Measured: 0 of 6,000 at 200/s for 30 s on 2 cores shared with a
	// load average of 14 (p99 204 ms against a 10 s expiry).
	maxUnknown = 0.01
	// What the embedded JetStream node holds once warm, whatever the
	// number of bounties: the buffers of the records' 4 MiB blocks,
	// each kept 10 s after its last use (two at 200/s).
	blockBuffers = 8 << 20
	// What each bounty stored costs the node's memory, for as long as
	// its record is kept (the retention, 7 days by default): JetStream
	// indexes every key of a bucket in memory. Measured on 100,000
	// records: 172 B each while their block's per-subject state is
	// loaded (for 2 minutes after the block's last use), 78 B after.
	perRecordFresh   = 172
	perRecordOld     = 78
	subjectStateLife = 2 * time.Minute
	// gcFactor: the anonymous RSS follows the collector's goal, twice the
	// live heap (GOGC=100).
	gcFactor = 2
	// sampleSwing: two samples of the same steady state differ by up to
	// this much, depending on when the collector last ran (up to 6 MiB
	// seen from one 5 s sample to the next at 200/s).
	sampleSwing = 8 << 20
)

// growthBound is how much the engine's anonymous RSS may grow from the
// sample at `from` to the one at `to` of a run at rate bounties/s: the
// node warming up (its block buffers) and the index entries of the
// records stored meanwhile, as the collector's goal holds them, plus the
// sampling swing. Nothing in it is a per-bounty cost of the engine's own:
// at 200/s a leak of 1 KiB per bounty is 23 MiB a minute in RSS, past
// the bound within the soak's first minutes. Measured at 200/s: +6.5
// MiB from 11 s to 30 s (bound 25 MiB), +21.8 MiB from 11 s to 90 s
// (bound 29 MiB; 25.9 → 47.7 MiB, between 43.6 and 50.0 from 56 s on,
// once the buffers were warm). The soak's bound, 46 MiB, is mostly the
// index: at a sustained 200/s the node's live heap grows ~0.9 MiB a
// minute for the whole retention, which operators size (docs/deploy.md).
func growthBound(rate float64, from, to time.Duration) int64 {
	records := func(d time.Duration) float64 { return rate * d.Seconds() }
	span := to - from
	fresh := min(span, subjectStateLife)
	index := records(fresh)*perRecordFresh + records(span-fresh)*perRecordOld
	return gcFactor*(blockBuffers+int64(index)) + sampleSwing
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchEngine(b *testing.B, seconds int) {
	rate := float64(envInt("MICROENGINE_LOAD_RATE", 200))
	for range b.N {
		dir := eicarEngineDir(b, "warn", "")
		eng := startEngine(b, dir)
		pluginPID := testproc.Children(eng.cmd.Process.Pid)

		var samples []memSample
		var mu sync.Mutex
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			start := time.Now()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				s := memSample{at: time.Since(start)}
				s.engine = testproc.MemoryStatus(eng.cmd.Process.Pid, "RssAnon")
				s.engineFile = testproc.MemoryStatus(eng.cmd.Process.Pid, "RssFile")
				for _, p := range pluginPID {
					s.plugins += testproc.MemoryStatus(p, "RssAnon")
				}
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
		}()

		b.ResetTimer()
		sb, err := simulator.Run(context.Background(), simulator.Options{
			URL: eng.url + "/", Secret: secret, Count: int(rate) * seconds, Rate: rate,
			Expiry: 10 * time.Second, Concurrency: 128,
		})
		b.StopTimer()
		close(stop)
		<-sampled
		if err != nil {
			b.Fatal(err)
		}
		eng.stop()
		if !sb.OK() {
			var out strings.Builder
			sb.WriteText(&out)
			b.Errorf("not every bounty was sent and answered right, once, in time:\n%s", out.String())
		}
		if share := sb.UnknownShare(); share > maxUnknown {
			b.Errorf("%.1f%% of the bounties answered unknown, over the ceiling of %.1f%%", 100*share, 100*maxUnknown)
		}
		answered := float64(sb.Answered) / sb.Seconds
		b.ReportMetric(answered, "bounties/s")
		b.ReportMetric(sb.Latency.P50, "p50-ms")
		b.ReportMetric(sb.Latency.P99, "p99-ms")
		b.ReportMetric(float64(sb.Unknown), "unknown")
		mu.Lock()
		defer mu.Unlock()
		if len(samples) < 12 {
			b.Errorf("%d memory samples: a run shorter than 12 s cannot tell growth from warm-up", len(samples))
			return
		}
		warm := samples[10] // after ten seconds of load
		last := samples[len(samples)-1]
		if growth, bound := last.engine-warm.engine, growthBound(rate, warm.at, last.at); growth > bound {
			b.Errorf("the engine's anonymous memory grew by %d MiB from %s to %s, over the bound of %d MiB",
				growth>>20, warm.at.Round(time.Second), last.at.Round(time.Second), bound>>20)
		}
		var peak int64
		for _, s := range samples {
			peak = max(peak, s.engine+s.plugins)
		}
		b.ReportMetric(float64(peak)/(1<<20), "peak-anon-MiB")
		b.ReportMetric(float64(last.engine-warm.engine)/(1<<20), "engine-anon-growth-MiB")
		b.Logf("%d bounties in %.0fs: %.0f answered/s, p50 %.1f ms, p99 %.1f ms, %d unknown; engine anonymous RSS %d MiB at %s → %d MiB at %s, file-backed (store mmap) %d → %d MiB; peak anonymous engine+plugin %d MiB",
			sb.Sent, sb.Seconds, answered, sb.Latency.P50, sb.Latency.P99, sb.Unknown,
			warm.engine>>20, warm.at.Round(time.Second), last.engine>>20, last.at.Round(time.Second),
			warm.engineFile>>20, last.engineFile>>20, peak>>20)
	}
}

// memSample splits the engine's resident memory: anonymous (heap, stacks:
// what must stay flat) and file-backed (mostly the bounty store's mmap,
// which grows with the audit trail until retention prunes it).
type memSample struct {
	at                 time.Duration
	engine, engineFile int64
	plugins            int64
}
