//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/host/simulator"
	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/internal/samples"
	"github.com/microengine/microengine/internal/testbin"
)

// TestMultiBackendEngine runs `microengine run` with eicar, clamav (a
// private clamd) and yara (the project's rules) under the simulator on
// make run's sample set: artifacts that only YARA catches, only ClamAV,
// both, and neither. Every composed verdict must be right and every
// backend must agree with what it should catch. Then one answer's
// metadata is read for the backends and YARA's matches, and a reload that
// caps yara at suspicious changes the composed verdict of a YARA-only
// sample.
func TestMultiBackendEngine(t *testing.T) {
	clamd := devclamd.StartT(t, devclamd.Options{})
	// As the default engine.hcl: images are answered unknown unscanned.
	dir := engineDir(t, clamd, `  filter "reject" {
    field = "mimetype"
    op    = "startswith"
    value = "image/"
  }`)
	install(t, testbin.BuildT(t, "microengine-plugin-yara", "./plugins/yara"), filepath.Join(dir, "plugins", "microengine-plugin-yara"))
	cfgPath := filepath.Join(dir, "engine.hcl")
	base, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	yaraBlock := func(extra string) string {
		return `
plugin "yara" {
  path    = "./plugins/microengine-plugin-yara"
  timeout = "10s"` + extra + `
  config {
    rules = [` + jsonString(filepath.Join(testbin.Root(), "testdata", "yara")) + `]
  }
}
`
	}
	os.WriteFile(cfgPath, append(append([]byte(nil), base...), yaraBlock("")...), 0o644)
	eng := startEngine(t, dir)

	sampleDir := t.TempDir()
	if err := samples.Write(sampleDir); err != nil {
		t.Fatal(err)
	}
	set, err := simulator.LoadDir(sampleDir)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := simulator.Run(context.Background(), simulator.Options{URL: eng.url + "/", Secret: secret, Count: len(set),
		Rate: 50, Expiry: 20 * time.Second, Samples: set})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sb.WriteText(&out)
	t.Log("\n" + out.String())
	if !sb.OK() || sb.Correct != len(set) {
		t.Fatalf("not every sample got its verdict:\n%s", out.String())
	}
	for _, name := range []string{"eicar", "clamav", "yara"} {
		if a := sb.Plugins[name]; a.Asked == 0 || a.Agree != a.Asked {
			t.Errorf("plugin %s: %+v; want it to agree on every sample", name, a)
		}
	}

	// One answer, read whole: each backend's verdict and versions, and
	// the YARA rule that decided, with its meta.
	market := newMarketplace(t)
	b, key := market.newBounty(samples.YaraMarker("SCORE-MID"), 20*time.Second)
	eng.sendBounty(b)
	a := market.waitAnswer(key, 15*time.Second)
	var meta struct {
		Backends []struct {
			Name              string            `json:"name"`
			Verdict           string            `json:"verdict"`
			VendorVersion     string            `json:"vendor_version"`
			SignaturesVersion string            `json:"signatures_version"`
			Matches           []json.RawMessage `json:"matches"`
		} `json:"backends"`
	}
	if err := json.Unmarshal(a.Metadata, &meta); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, be := range meta.Backends {
		got[be.Name] = be.Verdict
		if be.Name == "yara" && (be.VendorVersion == "" || !strings.Contains(be.SignaturesVersion, " rules ") ||
			len(be.Matches) != 1 || !strings.Contains(string(be.Matches[0]), `"rule":"scores:Score_Mid"`) ||
			!strings.Contains(string(be.Matches[0]), `"score":"50"`)) {
			t.Errorf("yara backend in the answer: %+v", be)
		}
	}
	if a.Verdict != "suspicious" || got["yara"] != "suspicious" || got["clamav"] != "benign" || got["eicar"] != "benign" {
		t.Errorf("answer %s with backends %v; want suspicious from yara alone", a.Verdict, got)
	}

	// The composition follows a reload of engine.hcl: yara capped at
	// suspicious cannot make a YARA-only sample malicious on its own.
	os.WriteFile(cfgPath, append(append([]byte(nil), base...), yaraBlock("\n  max_verdict = \"suspicious\"")...), 0o644)
	if out, err := exec.Command(bins.host, "reload", "-config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("microengine reload: %v\n%s", err, out)
	}
	b, key = market.newBounty(samples.YaraMarker("FAMILY"), 20*time.Second)
	eng.sendBounty(b)
	if a := market.waitAnswer(key, 15*time.Second); a.Verdict != "suspicious" || !strings.Contains(string(a.Metadata), `"capped":true`) {
		t.Errorf("a YARA-only sample with yara capped: %s %s; want suspicious, yara marked capped", a.Verdict, a.Metadata)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
