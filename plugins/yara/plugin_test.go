package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
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

// TestManyMatchesKeepTheVerdict scans, by reference as the host passes a
// file, an artifact that 3,000 rules match (a file can match hundreds of a
// public collection's rules). The answer lists the deciding matches first,
// as many as fit, and counts the rest: the verdict stands. A list of every
// match made the answer too large for the protocol and the artifact
// unknown.
func TestManyMatchesKeepTheVerdict(t *testing.T) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	const rules = 3000
	var src strings.Builder
	for i := range rules {
		meta := `category = "hunting"`
		if i == rules-1 { // the one deciding rule matches last
			meta = `score = 90 malware_family = "Many.Matches"`
		}
		fmt.Fprintf(&src, "rule r%04d { meta: %s strings: $a = \"MANY-MARKER\" condition: $a }\n", i, meta)
	}
	os.WriteFile(filepath.Join(dir, "many.yar"), []byte(src.String()), 0o644)
	if _, err := s.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if !s.ByReference() {
		t.Fatal("the host would stream to the plugin, not pass the file by reference")
	}
	if err := s.Configure(ctx, []byte(fmt.Sprintf(`{"rules": [%q], "reload_interval": "0s"}`, dir))); err != nil {
		t.Fatal(err)
	}
	content := append(make([]byte, 300<<10), "MANY-MARKER"...) // past the in-memory path: mapped in place
	f, err := os.CreateTemp(t.TempDir(), "artifact")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(content)
	res, err := s.Scan(ctx, shared.Artifact{ID: "many", Type: shared.ArtifactFile, Size: int64(len(content)), File: f, Content: io.NewSectionReader(f, 0, int64(len(content)))})
	if err != nil || res.Verdict != shared.VerdictMalicious || res.MalwareFamily != "Many.Matches" {
		t.Fatalf("scan: %s %q %s %v; want malicious Many.Matches", res.Verdict, res.MalwareFamily, res.Reason, err)
	}
	var listed []scanner.Match
	if err := json.Unmarshal([]byte(res.Metadata[scanner.MetaMatches]), &listed); err != nil {
		t.Fatalf("matches: %v", err)
	}
	omitted, _ := strconv.Atoi(res.Metadata[scanner.MetaMatchesOmitted])
	if len(listed) == 0 || listed[0].Rule != "many:r2999" || len(listed)+omitted != rules || omitted == 0 {
		t.Errorf("%d matches listed (first %+v), %d omitted; want the deciding one first and %d in all", len(listed), listed[0], omitted, rules)
	}
}
