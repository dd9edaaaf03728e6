//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
func BenchmarkEngineLoad(b *testing.B) {
	benchEngine(b, envInt("MICROENGINE_LOAD_SECONDS", 30))
}

// BenchmarkEngineSoak is BenchmarkEngineLoad for ten minutes: memory must
// stay flat (no store, queue or id set that grows without bound).
func BenchmarkEngineSoak(b *testing.B) {
	benchEngine(b, envInt("MICROENGINE_SOAK_SECONDS", 600))
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
		dir, err := os.MkdirTemp("", "e2e-load-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		os.MkdirAll(filepath.Join(dir, "plugins"), 0o755)
		install(b, bins.eicarV1, filepath.Join(dir, "plugins", "microengine-plugin-eicar"))
		cfg := fmt.Sprintf(`engine {
  data_dir  = "./data"
  log_level = "warn"
}
plugin "eicar" {
  path = "./plugins/microengine-plugin-eicar"
}
marketplace {
  listen         = "127.0.0.1:0"
  webhook_secret = %q
}
`, secret)
		os.WriteFile(filepath.Join(dir, "engine.hcl"), []byte(cfg), 0o644)
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
		if sb.Wrong+sb.Missing+sb.Late+sb.Invalid+sb.Refused > 0 {
			b.Errorf("scoreboard: %+v", sb)
		}
		answered := float64(sb.Answered) / sb.Seconds
		b.ReportMetric(answered, "bounties/s")
		b.ReportMetric(sb.Latency.P50, "p50-ms")
		b.ReportMetric(sb.Latency.P99, "p99-ms")
		b.ReportMetric(float64(sb.Unknown), "unknown")
		mu.Lock()
		defer mu.Unlock()
		if len(samples) < 3 {
			return
		}
		warm := samples[min(len(samples)-1, 10)] // after ten seconds of load
		last := samples[len(samples)-1]
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
