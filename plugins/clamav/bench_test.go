package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/benchwork"
	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/internal/testbin"
	"github.com/microengine/microengine/internal/testproc"
	"github.com/microengine/microengine/plugins/clamav/clamd"
	"github.com/microengine/microengine/plugins/clamav/scanner"
	"github.com/microengine/microengine/shared"
)

// The workload is benchwork's. clamd caches the verdict of bytes it has
// seen, so every artifact is pseudo-random content that starts with a
// unique word (see runWays).

// BenchmarkInstream measures host → plugin (the real binary, launched as
// the host launches it) → clamd against the same workload sent straight
// to clamd by the bare INSTREAM client, in the same run and at the same
// concurrency, and reports both and their ratio. The bare client
// keeping sessions, and the scanner run in-process (no plugin boundary),
// are measured too, to tell the cost of our code and of the boundary. The
// four take turns, in a rotating order, so drift in clamd's speed does not
// favour one. Cold runs of `microengine scan` on the same kind of files
// follow. Run it with
//
//	go test -run '^$' -bench Instream -benchtime 4x ./plugins/clamav
func BenchmarkInstream(b *testing.B) {
	d := devclamd.StartT(b, devclamd.Options{
		StreamMaxLength: 600 << 20,
		Config: []string{
			// Room for the 200 and 512 MiB streams: with AlertExceedsMax a hit limit
			// is an early Heuristics.Limits FOUND, which would measure
			// nothing. MaxScanSize counts what clamd extracts too, and noise
			// holds chance archive and executable headers.
			"MaxFileSize 600M", "MaxScanSize 2G",
			// clamd spools every stream to a temp file. On this VM's disk,
			// writeback of earlier runs swings throughput by 2-3x from one
			// run to the next; tmpfs leaves clamd's CPU as the bottleneck,
			// so the ratios measure our side.
			"TemporaryDirectory " + benchwork.TempDir(b, "clamd-bench-"),
		},
	})
	config := fmt.Sprintf(`{"address":%q,"max_stream_size":"600M","max_connections":%d,"timeout":"5m"}`, d.Address(), benchwork.Concurrency)
	p := launch(b)
	configure(b, p.scanner, config)
	inproc := scanner.New(nil)
	configure(b, inproc, config)
	// Untimed: the first benign answer from a clamd waits for the probes
	// of its limits (once per clamd process; see the scanner's probe.go).
	for _, s := range []shared.Scanner{p.scanner, inproc} {
		if err := scanBenign(s, bytes.NewReader(make([]byte, 4096)), 4096); err != nil {
			b.Fatalf("warm-up scan: %v", err)
		}
	}
	// The bare client as clamdscan --stream and most clamd libraries work:
	// a connection per INSTREAM. And the same client keeping IDSESSION
	// connections, as the plugin does: the ratio to it is the cost of the
	// plugin boundary alone.
	bare, err := clamd.NewClient(d.Address(), clamd.Options{MaxStreamSize: 600 << 20})
	if err != nil {
		b.Fatal(err)
	}
	bareSession, err := clamd.NewClient(d.Address(), clamd.Options{MaxStreamSize: 600 << 20, Sessions: benchwork.Concurrency})
	if err != nil {
		b.Fatal(err)
	}
	defer bareSession.Close()
	ways := []way{
		{"bare", func(r io.Reader, _ int64) error {
			reply, err := bare.Instream(context.Background(), r)
			return wantOK(reply, err)
		}},
		{"bare_session", func(r io.Reader, _ int64) error {
			reply, err := bareSession.Instream(context.Background(), r)
			return wantOK(reply, err)
		}},
		{"inproc", func(r io.Reader, size int64) error { return scanBenign(inproc, r, size) }},
		{"plugin", func(r io.Reader, size int64) error { return scanBenign(p.scanner, r, size) }},
	}
	// Seeds unique to this run, so nothing is in clamd's cache.
	// Seeds unique to this run, so nothing is in clamd's cache.
	var seed atomic.Uint64
	seed.Store(uint64(time.Now().UnixNano()))

	b.Run("stream_200MiB", func(b *testing.B) {
		took := runWays(b, ways, &seed, func(base uint64, send func(io.Reader, int64) error) error {
			return send(uniqueNoise(benchwork.LargeSize, base, seed.Add(1)), benchwork.LargeSize)
		})
		report(b, "MB/s", float64(benchwork.LargeSize)*float64(b.N)/1e6, took)
		reportPeakRSS(b, p.pid())
	})

	b.Run(fmt.Sprintf("files_4KiB_x%d_c%d", benchwork.Files, benchwork.Concurrency), func(b *testing.B) {
		took := runWays(b, ways, &seed, func(base uint64, send func(io.Reader, int64) error) error {
			var file atomic.Uint64
			return parallel(benchwork.Files, benchwork.Concurrency, func() error {
				return send(uniqueNoise(benchwork.FileSize, base+file.Add(1), seed.Add(1)), benchwork.FileSize)
			})
		})
		report(b, "files/s", float64(benchwork.Files*b.N), took)
		reportPeakRSS(b, p.pid())
	})

	// Cold, as a user runs it: `microengine scan` starts, launches the
	// plugin, scans a folder and stops; all of it is timed. Writing the
	// files is not.
	cli := testbin.BuildT(b, "microengine", "./host/cmd/microengine")
	engineHCL := coldConfig(b, d.Address())
	b.Run("cold_cli_stream_200MiB", func(b *testing.B) {
		took := coldScans(b, cli, engineHCL, func(dir string) {
			writeNoiseFile(b, filepath.Join(dir, "large"), benchwork.LargeSize, seed.Add(1))
		})
		b.ReportMetric(float64(benchwork.LargeSize)*float64(b.N)/1e6/took.Seconds(), "cold_MB/s")
	})
	b.Run(fmt.Sprintf("cold_cli_files_4KiB_x%d_c%d", benchwork.Files, benchwork.Concurrency), func(b *testing.B) {
		took := coldScans(b, cli, engineHCL, func(dir string) {
			for i := range benchwork.Files {
				writeNoiseFile(b, filepath.Join(dir, fmt.Sprintf("f%05d", i)), benchwork.FileSize, seed.Add(1))
			}
		})
		b.ReportMetric(float64(benchwork.Files*b.N)/took.Seconds(), "cold_files/s")
	})

	// Memory, as a user runs it: the peak resident sets of `microengine
	// scan` and of its plugin while they stream a 512 MiB artifact.
	b.Run("cold_cli_memory_512MiB", func(b *testing.B) {
		path := filepath.Join(benchwork.TempDir(b, "clamd-bench-"), "large")
		var host, plugin int64
		for b.Loop() {
			b.StopTimer()
			// Fresh content each time: clamd would answer a repeat
			// from its cache.
			writeNoiseFile(b, path, benchwork.MemorySize, seed.Add(1))
			b.StartTimer()
			h, p := peakRSS(b, cli, engineHCL, path)
			host, plugin = max(host, h), max(plugin, p)
		}
		os.Remove(path)
		b.ReportMetric(float64(host)/(1<<20), "host_peak_RSS_MiB")
		b.ReportMetric(float64(plugin)/(1<<20), "plugin_peak_RSS_MiB")
		b.ReportMetric(float64(host+plugin)/(1<<20), "host+plugin_peak_RSS_MiB")
	})
}

// peakRSS runs `microengine scan` on path and returns the peak resident
// sets (VmHWM) of the host process and of the plugin it launched. VmHWM
// only grows, so the last reading before each process ends is its peak.
func peakRSS(b *testing.B, cli, engineHCL, path string) (host, plugin int64) {
	cmd := exec.Command(cli, "scan", "-config", engineHCL, path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				b.Fatalf("microengine scan: %v\n%s", err, tail(out.Bytes(), 2048))
			}
			return host, plugin
		case <-tick.C:
			host = max(host, testproc.MemoryStatus(cmd.Process.Pid, "VmHWM"))
			for _, pid := range testproc.Children(cmd.Process.Pid) {
				plugin = max(plugin, testproc.MemoryStatus(pid, "VmHWM"))
			}
		}
	}
}

// coldConfig is an engine.hcl with the clamav plugin alone, against clamd
// at address, at the benchmark's concurrency.
func coldConfig(b *testing.B, address string) string {
	hcl := fmt.Sprintf(`engine {
  concurrency = %d
  log_level   = "warn"
}

plugin "clamav" {
  path = %q
  config {
    address         = %q
    max_stream_size = "600M"
    max_connections = %d
    timeout         = "5m"
  }
}
`, benchwork.Concurrency, pluginBinary, address, benchwork.Concurrency)
	path := filepath.Join(b.TempDir(), "engine.hcl")
	if err := os.WriteFile(path, []byte(hcl), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// coldScans runs `microengine scan` once per iteration on a fresh folder
// that fill writes, and returns the time the scans took. Exit status 0
// means every artifact was benign, as noise must be.
func coldScans(b *testing.B, cli, engineHCL string, fill func(dir string)) time.Duration {
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		dir, err := os.MkdirTemp(benchwork.TempDir(b, "clamd-bench-"), "cold-")
		if err != nil {
			b.Fatal(err)
		}
		fill(dir)
		b.StartTimer()
		start := time.Now()
		out, err := exec.Command(cli, "scan", "-config", engineHCL, "-concurrency", strconv.Itoa(benchwork.Concurrency), dir).CombinedOutput()
		took += time.Since(start)
		if err != nil {
			b.Fatalf("microengine scan: %v\n%s", err, tail(out, 2048))
		}
		b.StopTimer()
		os.RemoveAll(dir)
		b.StartTimer()
	}
	return took
}

func writeNoiseFile(b *testing.B, path string, size int64, seed uint64) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, uniqueNoise(size, seed, seed)); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// way is one path from the benchmark to clamd.
type way struct {
	name string
	send func(content io.Reader, size int64) error
}

// runWays runs the workload once per iteration over each way, in an order
// that rotates with the iteration, and returns the time each way took.
//
// In one iteration every way gets the same content from the same base
// seed, except for a unique first word: clamd's cost varies with what
// random bytes happen to look like (chance archive or executable headers),
// and this keeps that variance out of the ratios, while the unique word
// keeps each artifact out of clamd's cache.
func runWays(b *testing.B, ways []way, seed *atomic.Uint64, workload func(base uint64, send func(io.Reader, int64) error) error) map[string]time.Duration {
	took := map[string]time.Duration{}
	for i := 0; b.Loop(); i++ {
		base := seed.Add(1 << 32)
		for j := range ways {
			w := ways[(i+j)%len(ways)]
			start := time.Now()
			if err := workload(base, w.send); err != nil {
				b.Fatalf("%s: %v", w.name, err)
			}
			took[w.name] += time.Since(start)
		}
	}
	return took
}

// report turns amounts over times into rates per way, and the plugin's
// ratios to the bare client and to the in-process scanner.
func report(b *testing.B, unit string, amount float64, took map[string]time.Duration) {
	rate := map[string]float64{}
	for name, d := range took {
		rate[name] = amount / d.Seconds()
		b.ReportMetric(rate[name], name+"_"+unit)
	}
	b.ReportMetric(rate["plugin"]/rate["bare"], "plugin/bare")
	b.ReportMetric(rate["plugin"]/rate["bare_session"], "plugin/bare_session")
	b.ReportMetric(rate["inproc"]/rate["bare"], "inproc/bare")
}

// reportPeakRSS reports the plugin process's peak resident set (VmHWM).
func reportPeakRSS(b *testing.B, pid int) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Logf("peak RSS of the plugin: %v", err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err == nil {
				b.ReportMetric(float64(kb)/1024, "plugin_peak_RSS_MiB")
			}
			return
		}
	}
}

func wantOK(reply clamd.Reply, err error) error {
	if err != nil {
		return err
	}
	if reply.Status != clamd.StatusOK {
		return fmt.Errorf("clamd answered %q for noise", reply.Raw)
	}
	return nil
}

func scanBenign(s shared.Scanner, content io.Reader, size int64) error {
	r, err := s.Scan(context.Background(), shared.Artifact{ID: "bench", Type: shared.ArtifactFile, Size: size, Content: content})
	if err != nil {
		return err
	}
	if r.Verdict != shared.VerdictBenign {
		return fmt.Errorf("plugin answered %s (%s) for noise", r.Verdict, r.Reason)
	}
	return nil
}

// parallel runs job n times on c goroutines and returns the first error.
func parallel(n, c int, job func() error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := job(); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// noiseReader yields size pseudo-random bytes from a seed without holding
// them.
type noiseReader struct {
	rng  *rand.PCG
	left int64
	tail []byte
	word [8]byte
}

func newNoise(size int64, seed uint64) *noiseReader {
	return &noiseReader{rng: rand.NewPCG(seed, seed^0x5851f42d4c957f2d), left: size}
}

func (r *noiseReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := copy(p, r.tail)
	r.tail = r.tail[n:]
	for ; n+8 <= len(p); n += 8 {
		binary.LittleEndian.PutUint64(p[n:], r.rng.Uint64())
	}
	if n < len(p) {
		binary.LittleEndian.PutUint64(r.word[:], r.rng.Uint64())
		k := copy(p[n:], r.word[:])
		r.tail = r.word[k:]
		n += k
	}
	r.left -= int64(n)
	return n, nil
}

// uniqueNoise is size bytes of noise from base, except that the first 8
// are unique.
func uniqueNoise(size int64, base, unique uint64) io.Reader {
	var word [8]byte
	binary.LittleEndian.PutUint64(word[:], unique)
	return io.MultiReader(bytes.NewReader(word[:min(8, size)]), newNoise(max(0, size-8), base))
}
