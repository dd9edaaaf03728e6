// Package scaffold writes a new scanner plugin's folder: a main.go, a
// working scanner to replace with one's own, and a conformance test that
// builds the plugin and checks it against the contract. What it writes
// builds and passes the conformance suite unchanged (the e2e tests check
// that), so a plugin author starts from green.
package scaffold

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"go/format"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
)

//go:embed templates/*.tmpl
var templates embed.FS

// validName is what a plugin may be called: it names a folder, a binary
// (microengine-plugin-NAME) and an engine.hcl block.
var validName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// files are the templates written into the plugin's folder, by output name.
var files = []string{"main.go", "scanner.go", "conformance_test.go"}

// Write creates dir/NAME with the new plugin's files and returns their
// paths. dir/NAME must not exist yet: nothing is overwritten.
func Write(dir, name string) ([]string, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("plugin name %q: want lowercase letters, digits and dashes, starting with a letter (at most 32)", name)
	}
	target := filepath.Join(dir, name)
	if _, err := os.Stat(target); err == nil {
		return nil, fmt.Errorf("%s already exists: choose another name, or remove it first", target)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("new plugin: %w", err)
	}
	rendered := map[string][]byte{}
	for _, f := range files {
		b, err := render(f+".tmpl", name)
		if err != nil {
			return nil, err
		}
		if b, err = format.Source(b); err != nil {
			return nil, fmt.Errorf("template %s does not give valid Go: %w", f, err)
		}
		rendered[f] = b
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return nil, fmt.Errorf("new plugin: %w", err)
	}
	var written []string
	for _, f := range files {
		p := filepath.Join(target, f)
		if err := os.WriteFile(p, rendered[f], 0o644); err != nil {
			return written, fmt.Errorf("new plugin: %w", err)
		}
		written = append(written, p)
	}
	return written, nil
}

// ConfigBlock is the engine.hcl block for the new plugin, to paste.
func ConfigBlock(name string) (string, error) {
	b, err := render("engine.hcl.tmpl", name)
	return string(b), err
}

func render(tmpl, name string) ([]byte, error) {
	t, err := template.ParseFS(templates, "templates/"+tmpl)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", tmpl, err)
	}
	var buf bytes.Buffer
	data := struct{ Name, Family string }{name, family(name)}
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("template %s: %w", tmpl, err)
	}
	return buf.Bytes(), nil
}

// family is the malware family the scaffold's scanner reports: the
// plugin's name in the usual Vendor.Name shape ("my-scanner" →
// "MyScanner.Marker").
func family(name string) string {
	var b strings.Builder
	for _, part := range strings.Split(name, "-") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String() + ".Marker"
}

// module is the module a plugin's folder must lie in: the code written
// imports its shared package.
const module = "github.com/microengine/microengine"

// DefaultDir is the folder new plugins go in when none is named: plugins/
// of the module's root, where `make build` finds them. cwd must be that
// root, since the paths printed and the commands suggested (go test
// ./plugins/NAME, make build) are relative to it.
func DefaultDir(cwd string) (string, error) {
	for dir := cwd; ; dir = filepath.Dir(dir) {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePath(b) == module {
			if dir != cwd {
				return "", fmt.Errorf("run it at the repository's root, %s (from here the plugin would not be in its plugins/ folder), or name the folder with -dir", dir)
			}
			return "plugins", nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("%s is not inside a clone of microengine (no go.mod of %s in it or above): a plugin imports the module's shared package, so it lives in the repository's plugins/ folder", cwd, module)
		}
	}
}

// modulePath is the module line of a go.mod.
func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}
