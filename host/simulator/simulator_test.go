package simulator_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/marketplace"
	"github.com/microengine/microengine/host/simulator"
	"github.com/microengine/microengine/shared"
)

// fakeEngine: EICAR is malicious, anything else benign.
func fakeEngine(ctx context.Context, a engine.Artifact) engine.Result {
	data, _ := io.ReadAll(io.NewSectionReader(a.Content, 0, a.Size))
	pr := engine.PluginResult{Name: "fake", Version: "1.0.0", Supported: true, Verdict: shared.VerdictBenign, Confidence: 0.9}
	if bytes.Contains(data, []byte("EICAR-STANDARD")) {
		pr.Verdict, pr.MalwareFamily = shared.VerdictMalicious, "EICAR"
	}
	return engine.Compose([]engine.PluginResult{pr})
}

// startEngine runs marketplace.Run (the real server, store and workers)
// with a fake scanner and returns its URL.
func startEngine(t *testing.T, scan marketplace.ScanFunc) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	dir := t.TempDir()
	go func() {
		done <- marketplace.Run(ctx, marketplace.Options{
			Config:  &config.Marketplace{Listen: "127.0.0.1:0", WebhookSecrets: []string{"sim-secret"}, SafetyMargin: 500 * time.Millisecond},
			DataDir: dir, Scanner: scan, Version: "test",
			OnListen: func(a string) { addr <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("marketplace.Run: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, marketplace.ListenAddrFile)); !os.IsNotExist(err) {
			t.Errorf("listen.addr left behind: %v", err)
		}
	})
	select {
	case a := <-addr:
		if got, _ := os.ReadFile(filepath.Join(dir, marketplace.ListenAddrFile)); strings.TrimSpace(string(got)) != a {
			t.Errorf("listen.addr = %q, want %q", got, a)
		}
		return "http://" + a + "/"
	case err := <-done:
		t.Fatalf("marketplace.Run: %v", err)
	case <-time.After(30 * time.Second): // its JetStream node starts first: room for a loaded machine's disk
		t.Fatal("the engine did not start listening within 30s")
	}
	return ""
}

func TestSimulatorAgainstEngine(t *testing.T) {
	url := startEngine(t, fakeEngine)
	sb, err := simulator.Run(context.Background(), simulator.Options{URL: url, Secret: "sim-secret", Count: 40, Rate: 400, Expiry: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sb.WriteText(&out)
	t.Log("\n" + out.String())
	if !sb.OK() || sb.Sent != 40 || sb.Correct != 40 || sb.Verdicts["malicious"] != 10 {
		t.Errorf("scoreboard: %+v", sb)
	}
	if sb.Latency.P50 <= 0 || sb.Latency.Max < sb.Latency.P99 {
		t.Errorf("latency %+v", sb.Latency)
	}
}

// TestSimulatorPolySwarmDialect: the engine takes every form PolySwarm's
// own code sends, and answers each correctly and in time.
func TestSimulatorPolySwarmDialect(t *testing.T) {
	url := startEngine(t, fakeEngine)
	sb, err := simulator.Run(context.Background(), simulator.Options{URL: url, Secret: "sim-secret", Count: 16, Rate: 400, Expiry: 5 * time.Second, Dialect: simulator.DialectPolySwarm})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sb.WriteText(&out)
	t.Log("\n" + out.String())
	if !sb.OK() || sb.Refused != 0 || sb.Correct != 16 || sb.Invalid != 0 {
		t.Errorf("scoreboard: %+v", sb)
	}
	if _, err := simulator.ParseDialect("klingon"); err == nil {
		t.Error("an unknown dialect is accepted")
	}
}

func TestSimulatorScoresWrongAndRefused(t *testing.T) {
	url := startEngine(t, func(context.Context, engine.Artifact) engine.Result {
		return engine.Compose([]engine.PluginResult{{Name: "lazy", Supported: true, Verdict: shared.VerdictBenign, Confidence: 1}})
	})
	sb, err := simulator.Run(context.Background(), simulator.Options{URL: url, Secret: "sim-secret", Count: 8, Rate: 400, Expiry: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if sb.OK() || sb.Wrong != 2 || sb.Correct != 6 {
		t.Errorf("a benign-always engine: %+v", sb)
	}
	sb, err = simulator.Run(context.Background(), simulator.Options{URL: url, Secret: "wrong", Count: 3, Rate: 100, Expiry: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Refused != 3 || sb.Missing != 0 || len(sb.Errors) == 0 || !strings.Contains(sb.Errors[0], "401") {
		t.Errorf("wrong secret: %+v", sb)
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("malicious/m1", "bad")
	write("benign/b1", "good")
	write("benign/b2", "good too")
	got, err := simulator.LoadDir(dir)
	if err != nil || len(got) != 3 || got[2].Name != "malicious/m1" || got[2].Expected != shared.VerdictMalicious {
		t.Fatalf("folders: %+v %v", got, err)
	}
	write(simulator.ManifestFile, `{"samples":[{"file":"benign/b1","verdict":"Benign","mimetype":"text/plain"},{"url":"http://x.example/","verdict":"unknown"},{"file":"malicious/m1"}]}`)
	got, err = simulator.LoadDir(dir)
	if err != nil || len(got) != 3 || got[0].Expected != shared.VerdictBenign || got[1].Type != shared.ArtifactURL || got[2].Expected != "" {
		t.Fatalf("manifest: %+v %v", got, err)
	}
	write(simulator.ManifestFile, `{"samples":[{"file":"nope","verdict":"benign"}]}`)
	if _, err := simulator.LoadDir(dir); err == nil {
		t.Error("a missing file was accepted")
	}
	if _, err := simulator.Marker("malicious:MICROENGINE-TEST-MARKER-X"); err != nil {
		t.Error(err)
	}
	if _, err := simulator.Marker("evil:X"); err == nil {
		t.Error("bad verdict accepted")
	}
}

// TestPerPluginAgreement: two fake backends, one catching only "ALPHA", the
// other only "BRAVO"; the composed verdict is right for every sample, and
// the scoreboard shows which backend caught what.
func TestPerPluginAgreement(t *testing.T) {
	twoBackends := func(ctx context.Context, a engine.Artifact) engine.Result {
		data, _ := io.ReadAll(io.NewSectionReader(a.Content, 0, a.Size))
		judge := func(name, marker string) engine.PluginResult {
			pr := engine.PluginResult{Name: name, Version: "1.0.0", Supported: true, Verdict: shared.VerdictBenign, Confidence: 1}
			if bytes.Contains(data, []byte(marker)) {
				pr.Verdict, pr.MalwareFamily = shared.VerdictMalicious, marker
			}
			return pr
		}
		return engine.Compose([]engine.PluginResult{judge("alpha", "ALPHA"), judge("bravo", "BRAVO")})
	}
	url := startEngine(t, twoBackends)
	samples := []simulator.Sample{
		{Name: "a", Type: shared.ArtifactFile, Content: []byte("ALPHA"), Expected: shared.VerdictMalicious, CaughtBy: []string{"alpha"}},
		{Name: "b", Type: shared.ArtifactFile, Content: []byte("BRAVO"), Expected: shared.VerdictMalicious, CaughtBy: []string{"bravo"}},
		{Name: "ab", Type: shared.ArtifactFile, Content: []byte("ALPHA BRAVO"), Expected: shared.VerdictMalicious, CaughtBy: []string{"alpha", "bravo"}},
		{Name: "none", Type: shared.ArtifactFile, Content: []byte("clean"), Expected: shared.VerdictBenign},
		// Said to be caught by both, but bravo misses it.
		{Name: "missed", Type: shared.ArtifactFile, Content: []byte("ALPHA again"), Expected: shared.VerdictMalicious},
	}
	sb, err := simulator.Run(context.Background(), simulator.Options{URL: url, Secret: "sim-secret", Count: len(samples), Rate: 100,
		Expiry: 5 * time.Second, Samples: samples})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sb.WriteText(&out)
	t.Log("\n" + out.String())
	if !sb.OK() || sb.Correct != len(samples) {
		t.Fatalf("scoreboard: %+v", sb)
	}
	alpha, bravo := sb.Plugins["alpha"], sb.Plugins["bravo"]
	if alpha.Asked != 5 || alpha.Agree != 5 || bravo.Asked != 5 || bravo.Agree != 4 || bravo.Disagree != 1 ||
		len(bravo.Misses) != 1 || !strings.HasPrefix(bravo.Misses[0], "missed (benign, want malicious)") {
		t.Errorf("agreement alpha %+v, bravo %+v", alpha, bravo)
	}
	if !strings.Contains(out.String(), "plugins   alpha agrees 5/5  bravo agrees 4/5") {
		t.Errorf("scoreboard text lacks the per-plugin line:\n%s", out.String())
	}
}
