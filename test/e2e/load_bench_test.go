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
	// warmUp: what the engine's anonymous RSS gains over its first
	// minute at a new rate, whatever the number of bounties: the
	// embedded JetStream node's buffers of its recently written 4 MiB
	// blocks (kept 10 s after their last use) and their per-subject
	// state (kept 2 minutes), twice for the collector's goal (GOGC=100).
	// Measured at 200/s: +21.8 MiB from 11 s to 90 s, of which ~15 MiB
	// is not the per-bounty slope below.
	warmUp = 16 << 20
	// perBountyRSS: what each bounty stored adds to the anonymous RSS for
	// as long as its record is kept (the retention, 7 days by default),
	// the slope measured once warm: +7.5 MiB from 91 s to 180 s at
	// 200/s (17,800 bounties), 440 B each. JetStream's in-memory index
	// of every key is what grows: 78 B per record, 172 B while its
	// block's subject state is loaded (measured on 100,000 records); a
	// heap profile of the in-process service at 200/s from 70 s to 160 s
	// shows nothing else of the engine's growing (its subject trees
	// +2.3 MB for 18,000 bounties, 128 B each). The RSS follows at about
	// twice that and more: the collector's goal, the allocator's spans.
	perBountyRSS = 450
	// sampleSwing: two samples of the same steady state differ by up to
	// this much, depending on when the collector last ran (up to 7 MiB
	// seen from one 10 s sample to the next at 200/s).
	sampleSwing = 8 << 20
)

// growthBound is how much the engine's anonymous RSS may grow from the
// sample at `from` to the one at `to` of a run at rate bounties/s: the
// warm-up, the bounties stored meanwhile at what each costs while it is
// kept, and the sampling swing. A leak of 1 KiB per bounty is 23 MiB a
// minute in RSS at 200/s: past the bound within the soak's first
// minutes. Measured at 200/s, from 11 s: +6.5 and +8.3 MiB to 30 s
// (bound 25.6 MiB), +21.8 to 90 s (bound 30.8), +29.0 to 180 s (bound
// 38.5; 28.8 → 57.8 MiB). The soak's bound (600 s) is 74.6 MiB, not run
// since the change. The per-bounty part is what operators size by the
// retention (docs/deploy.md).
func growthBound(rate float64, from, to time.Duration) int64 {
	bounties := rate * (to - from).Seconds()
	return warmUp + int64(bounties*perBountyRSS) + sampleSwing
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
