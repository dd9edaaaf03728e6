//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microengine/microengine/internal/testbin"
)

// TestNewPluginScaffold: `microengine new-plugin` writes a plugin that is
// gofmt-clean, vets, passes the conformance suite (strict, through its own
// go test), and works from the engine.hcl block it prints.
func TestNewPluginScaffold(t *testing.T) {
	root := testbin.Root()
	// Inside the module so the plugin's imports resolve, in a folder whose
	// name starts with "_" so ./... patterns never pick it up meanwhile.
	if err := os.MkdirAll(filepath.Join(root, "build"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(filepath.Join(root, "build"), "_scaffold-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	out := run(t, root, bins.host, "new-plugin", "-dir", dir, "demo-scanner")
	pluginDir := filepath.Join(dir, "demo-scanner")
	for _, f := range []string{"main.go", "scanner.go", "conformance_test.go"} {
		if !strings.Contains(out, filepath.Join(pluginDir, f)) {
			t.Errorf("new-plugin does not say it wrote %s:\n%s", f, out)
		}
	}
	block := out[strings.Index(out, `plugin "demo-scanner" {`):]

	if got := run(t, root, "gofmt", "-l", pluginDir); strings.TrimSpace(got) != "" {
		t.Errorf("gofmt -l: %s", got)
	}
	run(t, root, "go", "vet", pluginDir)
	test := run(t, root, "go", "test", "-count=1", "-v", "-run", "TestConformance", pluginDir)
	if !strings.Contains(test, "--- PASS: TestConformance/HOSTILE-001") || !strings.Contains(test, "--- PASS: TestConformance/SCAN-002") {
		t.Errorf("the scaffold's conformance test did not run the suite:\n%s", test)
	}

	// The printed block, pasted into an engine.hcl beside bin/.
	run(t, root, "go", "build", "-o", filepath.Join(dir, "bin", "microengine-plugin-demo-scanner"), pluginDir)
	cfg := filepath.Join(dir, "engine.hcl")
	if err := os.WriteFile(cfg, []byte("engine {\n  data_dir = \"./data\"\n}\n"+block), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, root, bins.host, "validate", "-config", cfg)
	marked := filepath.Join(dir, "marked.txt")
	os.WriteFile(marked, []byte("this file is EVIL"), 0o644)
	cmd := exec.Command(bins.host, "scan", "-config", cfg, marked)
	got, _ := cmd.Output()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(got), "DemoScanner.Marker FOUND") {
		t.Errorf("scan with the new plugin: exit %d, %s", cmd.ProcessState.ExitCode(), got)
	}
}

// run runs a command in dir and fails the test unless it succeeds.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}
