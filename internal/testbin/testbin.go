// Package testbin builds the project's binaries for tests that must run
// the real thing (a plugin launched through go-plugin, the host CLI).
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Root is the repository root, found from this file's location so tests
// work from any package folder.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build compiles the package at pkg (relative to the repo root, e.g.
// "./plugins/eicar") into dir/name, with optional -ldflags -X settings
// ("main.version=2.0.0"), and returns the binary's path.
func Build(dir, name, pkg string, xflags ...string) (string, error) {
	out := filepath.Join(dir, name)
	args := []string{"build", "-o", out}
	if len(xflags) > 0 {
		var ld []string
		for _, x := range xflags {
			ld = append(ld, "-X", x)
		}
		args = append(args, "-ldflags", strings.Join(ld, " "))
	}
	args = append(args, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = Root()
	cmd.Env = os.Environ()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// BuildT is Build for a test: it fails the test on error and builds into
// the test's temp dir.
func BuildT(t testing.TB, name, pkg string, xflags ...string) string {
	t.Helper()
	p, err := Build(t.TempDir(), name, pkg, xflags...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
