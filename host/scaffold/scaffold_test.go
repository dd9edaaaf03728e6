package scaffold

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The e2e tests build the written plugin and run the conformance suite on
// it; here, the files are written, parse, name the plugin, and nothing is
// overwritten.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	paths, err := Write(dir, "my-scanner")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 {
		t.Fatalf("wrote %v", paths)
	}
	fset := token.NewFileSet()
	for _, p := range paths {
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if f.Name.Name != "main" {
			t.Errorf("%s: package %s, want main", p, f.Name.Name)
		}
	}
	scanner, _ := os.ReadFile(filepath.Join(dir, "my-scanner", "scanner.go"))
	for _, want := range []string{`Name: "my-scanner"`, `"MyScanner.Marker"`} {
		if !strings.Contains(string(scanner), want) {
			t.Errorf("scanner.go lacks %s", want)
		}
	}
	block, err := ConfigBlock("my-scanner")
	if err != nil || !strings.Contains(block, `plugin "my-scanner" {`) || !strings.Contains(block, `# sha256 = `) {
		t.Errorf("config block %q, %v", block, err)
	}
	if _, err := Write(dir, "my-scanner"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second write: %v; want a refusal", err)
	}
	for _, bad := range []string{"", "My", "1x", "a b", "../x", strings.Repeat("a", 33)} {
		if _, err := Write(dir, bad); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

// DefaultDir is plugins/ only at the module's root: from a subfolder the
// plugin would land where make build does not look (plugins/plugins/NAME),
// and outside the module it would not build at all.
func TestDefaultDir(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if dir, err := DefaultDir(root); err != nil || dir != "plugins" {
		t.Errorf("at the root: %q, %v; want plugins", dir, err)
	}
	_, err = DefaultDir(filepath.Join(root, "plugins"))
	if err == nil || !strings.Contains(err.Error(), "run it at the repository's root, "+root) {
		t.Errorf("in plugins/: %v; want it to name the root", err)
	}
	_, err = DefaultDir(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "not inside a clone of microengine") {
		t.Errorf("outside the module: %v; want a refusal", err)
	}
}
