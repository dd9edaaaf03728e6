//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/samples"
)

// crashPanic is how the crasher plugin's panic is quoted: the runtime's
// line and the plugin's own frame.
var crashPanic = regexp.MustCompile(`crasher crashed on this artifact: panic: assignment to entry in nil map \(main\.go:[0-9]+\)`)

// crasherDir makes a folder with engine.hcl naming the crasher plugin
// (and nothing else), for `scan` and `run`.
func crasherDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "e2e-crash-") // short: the admin socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	install(t, bins.crasher, filepath.Join(dir, "microengine-plugin-crasher"))
	cfg := fmt.Sprintf(`engine {
  data_dir = "./data"
}
plugin "crasher" {
  path    = "./microengine-plugin-crasher"
  timeout = "10s"
}
marketplace {
  listen         = "127.0.0.1:0"
  metrics_listen = "127.0.0.1:0" # the default port may be another test's
  webhook_secret = %q
  fetch_timeout  = "2s"
  safety_margin  = "500ms"
}
`, secret)
	if err := os.WriteFile(filepath.Join(dir, "engine.hcl"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestScanPoisonFileCostsOnlyItself: `microengine scan` of files one of
// which crashes the plugin. The poison file is unknown with the panic
// quoted; every other file keeps its verdict, whether it was scanned beside
// the poison one or after it.
func TestScanPoisonFileCostsOnlyItself(t *testing.T) {
	dir := crasherDir(t)
	files := filepath.Join(dir, "files")
	os.MkdirAll(files, 0o755)
	write := func(name string, b []byte) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	big := bytes.Repeat([]byte("padding "), 1<<20) // 8 MiB: still in flight when the poison lands
	args := []string{
		write("1-clean.txt", []byte("a clean file\n")),
		write("2-poison.bin", []byte("header CRASH-ME trailer")),
		write("3-eicar.com", samples.EICAR()),
		write("4-big-eicar.bin", append(append([]byte{}, big...), samples.EICAR()...)),
		write("5-big-clean.bin", big),
		write("6-eicar-after.com", samples.EICAR()),
	}
	for _, concurrency := range []string{"1", "6"} {
		t.Run("concurrency "+concurrency, func(t *testing.T) {
			cmd := exec.Command(bins.host, append([]string{"scan", "-config", filepath.Join(dir, "engine.hcl"), "-concurrency", concurrency}, args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("scan: %v, want exit 1 (something found)\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			want := []string{": OK", ": UNKNOWN", ": EICAR-Test-File FOUND", ": EICAR-Test-File FOUND", ": OK", ": EICAR-Test-File FOUND"}
			if len(lines) != len(want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), stdout.String())
			}
			for i, w := range want {
				if !strings.HasPrefix(lines[i], args[i]+w) {
					t.Errorf("line %d: %q, want %q", i+1, lines[i], args[i]+w)
				}
			}
			if !crashPanic.MatchString(lines[1]) {
				t.Errorf("poison file's line %q does not quote the panic", lines[1])
			}
		})
	}
}

// TestRunPoisonBountyCostsOnlyItsAnswer: `microengine run` with bounties
// arriving together, one of which crashes the plugin: that one is answered
// unknown, every other one gets its verdict, and the metrics count the
// crashes.
func TestRunPoisonBountyCostsOnlyItsAnswer(t *testing.T) {
	mk := newMarketplace(t)
	eng := startEngine(t, crasherDir(t))

	big := bytes.Repeat([]byte("padding "), 512<<10) // 4 MiB
	type sent struct {
		key, verdict string
		id           int64
	}
	var all []sent
	var bounties []bounty
	add := func(content []byte, verdict string) {
		b, key := mk.newBounty(content, 20*time.Second)
		bounties = append(bounties, b)
		all = append(all, sent{key, verdict, b.ID})
	}
	for i := range 6 {
		switch i % 3 {
		case 0:
			add(append(append([]byte{}, big...), samples.EICAR()...), "malicious")
		case 1:
			add(append([]byte(fmt.Sprintf("clean %d ", i)), big...), "benign")
		default:
			add(samples.EICAR(), "malicious")
		}
		if i == 2 {
			add([]byte("header CRASH-ME trailer"), "unknown")
		}
	}
	var wg sync.WaitGroup
	for _, b := range bounties {
		wg.Add(1)
		go func() {
			defer wg.Done()
			eng.sendBounty(b)
		}()
	}
	wg.Wait()
	for _, s := range all {
		a := mk.waitAnswer(s.key, 20*time.Second)
		checkAssertion(t, a, s.verdict)
		if s.verdict != "unknown" {
			continue
		}
		// The reason is the operator's, in the log; the marketplace gets
		// unknown and bid 0.
		answered := regexp.MustCompile(fmt.Sprintf(`answered: bounty=%d .*verdict=unknown .*reason=".*`, s.id) + crashPanic.String())
		// The line follows the answer's POST: give it a moment.
		for deadline := time.Now().Add(5 * time.Second); !answered.MatchString(eng.logs()); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("the log does not give the panic as the reason for bounty %d", s.id)
				break
			}
		}
	}
	for name, want := range map[string]string{
		"microengine_plugin_crashes_total":           `microengine_plugin_crashes_total{plugin="crasher"} 2`,
		"microengine_plugin_crashed_artifacts_total": `microengine_plugin_crashed_artifacts_total{plugin="crasher"} 1`,
	} {
		if got := eng.metric(name); !strings.Contains(got, want) {
			t.Errorf("metrics: %q, want %q", got, want)
		}
	}
	t.Logf("%s", eng.metric("microengine_plugin_crash_retries_total"))
}
