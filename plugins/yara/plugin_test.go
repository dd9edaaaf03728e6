package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/internal/testbin"
	"github.com/microengine/microengine/plugins/yara/scanner"
	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/conformance"
	"github.com/microengine/microengine/shared/launch"
)

func projectRules(t *testing.T) string {
	t.Helper()
	return filepath.Join(testbin.Root(), "testdata", "yara")
}

// TestConformance runs the plugin contract's suite against the built
// plugin, configured with the project's rule set; the plugin vouches for
// its self-test sample, and the suite adds one sample per backend case.
func TestConformance(t *testing.T) {
	bin := testbin.BuildT(t, "microengine-plugin-yara", "./plugins/yara")
	conformance.Run(t, conformance.Config{
		Plugin:       bin,
		PluginConfig: []byte(fmt.Sprintf(`{"rules": [%q]}`, projectRules(t))),
		Samples: []shared.Sample{
			{Name: "family.txt", Content: []byte("x MICROENGINE-YARA-" + "TEST-FAMILY x"), Verdict: shared.VerdictMalicious, MalwareFamily: "MicroEngine.Test.Yara.Family"},
			{Name: "hunting.txt", Content: []byte("x MICROENGINE-YARA-" + "TEST-HUNTING x"), Verdict: shared.VerdictBenign},
		},
		Strict: true,
	})
}

// TestPluginBinaryScansAndReloads launches the plugin as the host does and
// checks the verdict, the metadata and a hot reload across the process
// boundary.
func TestPluginBinaryScansAndReloads(t *testing.T) {
	bin := testbin.BuildT(t, "microengine-plugin-yara", "./plugins/yara")
	c, err := launch.NewClient(launch.Config{Path: bin, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { launch.KillClient(c, 5*time.Second, hclog.NewNullLogger()) })
	s, err := launch.Dispense(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	rule := filepath.Join(dir, "r.yar")
	os.WriteFile(rule, []byte(`rule one { meta: score = 90 strings: $a = "ONE-MARKER" condition: $a }`), 0o644)
	if err := s.Configure(ctx, []byte(fmt.Sprintf(`{"rules": [%q], "reload_interval": "50ms"}`, dir))); err != nil {
		t.Fatal(err)
	}
	res, err := s.Scan(ctx, shared.Artifact{Type: shared.ArtifactFile, Size: 14, Content: strings.NewReader("xx ONE-MARKER ")})
	if err != nil || res.Verdict != shared.VerdictMalicious || res.MalwareFamily != "one" ||
		!strings.Contains(res.Metadata[scanner.MetaMatches], `"rule":"r:one"`) || res.Confidence != 0.9 {
		t.Fatalf("scan: %+v %v", res, err)
	}
	info, _ := s.Info(ctx)
	before := info.SignaturesVersion
	os.WriteFile(rule, []byte(`rule two { strings: $a = "TWO-MARKER" condition: $a }`), 0o644)
	next := time.Now().Add(time.Second)
	os.Chtimes(rule, next, next)
	for {
		h, err := s.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h.SignaturesVersion != before {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the plugin did not reload its rules")
		}
		time.Sleep(50 * time.Millisecond)
	}
	res, err = s.Scan(ctx, shared.Artifact{Type: shared.ArtifactFile, Size: 10, Content: strings.NewReader("TWO-MARKER")})
	if err != nil || res.Verdict != shared.VerdictMalicious || res.MalwareFamily != "two" {
		t.Fatalf("after reload: %+v %v", res, err)
	}
}
