package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/benchwork"
	"github.com/microengine/microengine/internal/testbin"
	"github.com/microengine/microengine/internal/testproc"
)

// BenchmarkYaraAgainstCLI measures `microengine scan` with the yara plugin
// alone against Debian's `yara` command on the same rules (testdata/yara,
// with the same external variables defined), both cold, as a user runs
// them: the process starts, loads the rules, scans, exits. Each round
// runs both, in turns, so drift on a shared machine favours neither; the
// ratio plugin/yara_cli is throughput over throughput (the target is
// ≥ 0.9). Then the plugin's peak resident set while `microengine scan`
// hands it a 512 MiB artifact. Run it with
//
//	go test -run '^$' -bench YaraAgainstCLI -benchtime 3x ./plugins/yara
func BenchmarkYaraAgainstCLI(b *testing.B) {
	yaraCLI, err := exec.LookPath("yara")
	if err != nil {
		b.Skip("Debian's yara command is not installed (scripts/ensure-yara.sh installs it)")
	}
	cli := testbin.BuildT(b, "microengine", "./host/cmd/microengine")
	plugin := testbin.BuildT(b, "microengine-plugin-yara", "./plugins/yara")
	rulesDir := filepath.Join(testbin.Root(), "testdata", "yara")
	ruleFiles, err := filepath.Glob(filepath.Join(rulesDir, "*.yar"))
	if err != nil || len(ruleFiles) == 0 {
		b.Fatalf("rule files in %s: %v", rulesDir, err)
	}
	engineHCL := benchConfig(b, plugin, rulesDir)
	tmp := benchwork.TempDir(b, "yara-bench-")

	// yara's arguments: the externals the plugin defines, each rule file
	// in its own namespace as the plugin loads them.
	yaraArgs := []string{"-d", "filename=", "-d", "filepath=", "-d", "extension=", "-d", "filetype=", "-d", "owner="}
	for _, f := range ruleFiles {
		ns := filepath.Base(f)
		yaraArgs = append(yaraArgs, ns[:len(ns)-len(filepath.Ext(ns))]+":"+f)
	}
	ways := []struct {
		name string
		run  func(target string, dir bool) error
	}{
		{"yara_cli", func(target string, dir bool) error {
			args := append([]string(nil), yaraArgs...)
			if dir {
				args = append([]string{"-r", "-p", strconv.Itoa(benchwork.Concurrency)}, args...)
			}
			out, err := exec.Command(yaraCLI, append(args, target)...).CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				return fmt.Errorf("yara: %v: %s", err, tail(out, 512))
			}
			return nil
		}},
		{"plugin", func(target string, _ bool) error {
			out, err := exec.Command(cli, "scan", "-config", engineHCL, "-concurrency", strconv.Itoa(benchwork.Concurrency), target).CombinedOutput()
			if err != nil {
				return fmt.Errorf("microengine scan: %v: %s", err, tail(out, 512))
			}
			return nil
		}},
	}
	measure := func(b *testing.B, target string, dir bool, unit string, amount float64) {
		took := map[string]time.Duration{}
		round := 0
		for b.Loop() {
			// A warm-up pass puts the content in the page cache for both.
			if round == 0 {
				for _, w := range ways {
					if err := w.run(target, dir); err != nil {
						b.Fatal(err)
					}
				}
			}
			for i := range ways {
				w := ways[(i+round)%len(ways)]
				start := time.Now()
				if err := w.run(target, dir); err != nil {
					b.Fatal(err)
				}
				took[w.name] += time.Since(start)
			}
			round++
		}
		for name, d := range took {
			b.ReportMetric(amount*float64(round)/d.Seconds(), name+"_"+unit)
		}
		b.ReportMetric(took["yara_cli"].Seconds()/took["plugin"].Seconds(), "plugin/yara_cli")
	}

	b.Run("large_200MiB", func(b *testing.B) {
		path := filepath.Join(tmp, "large")
		writeNoise(b, path, benchwork.LargeSize, 1)
		measure(b, path, false, "MB/s", benchwork.LargeSize/1e6)
	})
	b.Run(fmt.Sprintf("files_4KiB_x%d", benchwork.Files), func(b *testing.B) {
		dir := filepath.Join(tmp, "files")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for i := range benchwork.Files {
			writeNoise(b, filepath.Join(dir, fmt.Sprintf("f%05d", i)), benchwork.FileSize, uint64(i+2))
		}
		measure(b, dir, true, "files/s", benchwork.Files)
	})
	b.Run("memory_512MiB", func(b *testing.B) {
		path := filepath.Join(tmp, "memory")
		writeNoise(b, path, benchwork.MemorySize, 9)
		var hwm, anon, file, shmem int64
		for b.Loop() {
			h, a, f, s := pluginPeaks(b, cli, engineHCL, path)
			hwm, anon, file, shmem = max(hwm, h), max(anon, a), max(file, f), max(shmem, s)
		}
		// VmHWM counts the spool file's pages while libyara maps them
		// (page cache, shared, reclaimable); RssAnon is the plugin's own
		// memory, heap included: what the artifact must never fill.
		b.ReportMetric(float64(hwm)/(1<<20), "plugin_peak_RSS_MiB")
		b.ReportMetric(float64(anon)/(1<<20), "plugin_peak_RssAnon_MiB")
		b.ReportMetric(float64(file)/(1<<20), "plugin_peak_RssFile_MiB")
		// The artifact is on tmpfs: its mapped pages count as shared memory.
		b.ReportMetric(float64(shmem)/(1<<20), "plugin_peak_RssShmem_MiB")
	})
}

// pluginPeaks runs `microengine scan` on path and samples the plugin's
// peak resident set (VmHWM) and the peaks of its anonymous, file-backed and
// shared-memory parts, every 10 ms while it runs.
func pluginPeaks(b *testing.B, cli, engineHCL, path string) (hwm, anon, file, shmem int64) {
	cmd := exec.Command(cli, "scan", "-config", engineHCL, path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				b.Fatalf("microengine scan: %v\n%s", err, tail(out.Bytes(), 2048))
			}
			return hwm, anon, file, shmem
		case <-tick.C:
			for _, pid := range testproc.Children(cmd.Process.Pid) {
				hwm = max(hwm, testproc.MemoryStatus(pid, "VmHWM"))
				anon = max(anon, testproc.MemoryStatus(pid, "RssAnon"))
				file = max(file, testproc.MemoryStatus(pid, "RssFile"))
				shmem = max(shmem, testproc.MemoryStatus(pid, "RssShmem"))
			}
		}
	}
}

// benchConfig is an engine.hcl with the yara plugin alone on rulesDir.
func benchConfig(b *testing.B, plugin, rulesDir string) string {
	hcl := fmt.Sprintf(`engine {
  concurrency = %d
  log_level   = "warn"
}

plugin "yara" {
  path    = %q
  timeout = "5m"
  config {
    rules           = [%q]
    reload_interval = "0s"
  }
}
`, benchwork.Concurrency, plugin, rulesDir)
	path := filepath.Join(b.TempDir(), "engine.hcl")
	if err := os.WriteFile(path, []byte(hcl), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// writeNoise writes size pseudo-random bytes (no rule matches noise).
func writeNoise(b *testing.B, path string, size int64, seed uint64) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	buf := make([]byte, 1<<20)
	for size > 0 {
		for i := 0; i+8 <= len(buf); i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], r.Uint64())
		}
		n := min(int64(len(buf)), size)
		if _, err := f.Write(buf[:n]); err != nil {
			b.Fatal(err)
		}
		size -= n
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
