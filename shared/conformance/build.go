package conformance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildPlugin builds the plugin package pkg (a folder, "." for the test's
// own package; or an import path) into a fresh temporary folder, as
// microengine-plugin-NAME with NAME the package folder's name, and returns
// the binary's path and a function that removes the folder. ldflags, if
// any, are passed to go build's -ldflags ("-X main.version=1.2.3").
//
// It is meant for a plugin's TestMain, so the conformance test always
// checks the code under test rather than a stale binary:
//
//	var plugin string
//
//	func TestMain(m *testing.M) {
//		bin, cleanup, err := conformance.BuildPlugin(".")
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		plugin = bin
//		code := m.Run()
//		cleanup()
//		os.Exit(code)
//	}
func BuildPlugin(pkg string, ldflags ...string) (path string, cleanup func(), err error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", nil, fmt.Errorf("build plugin %s: the go command is needed: %w", pkg, err)
	}
	name, err := packageName(gobin, pkg)
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "microengine-plugin-build-")
	if err != nil {
		return "", nil, fmt.Errorf("build plugin %s: %w", pkg, err)
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	path = filepath.Join(dir, "microengine-plugin-"+name)
	args := []string{"build", "-o", path}
	if len(ldflags) > 0 {
		args = append(args, "-ldflags", strings.Join(ldflags, " "))
	}
	args = append(args, pkg)
	if out, err := exec.Command(gobin, args...).CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return path, cleanup, nil
}

// packageName is the name of the folder pkg lives in: what the plugin is
// called.
func packageName(gobin, pkg string) (string, error) {
	out, err := exec.Command(gobin, "list", "-f", "{{.Dir}}", pkg).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = strings.TrimSpace(string(ee.Stderr))
		}
		return "", fmt.Errorf("build plugin %s: go list: %w %s", pkg, err, stderr)
	}
	return filepath.Base(strings.TrimSpace(string(out))), nil
}
