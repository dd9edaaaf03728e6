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
