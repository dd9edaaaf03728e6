package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func TestWriteDiagnostics(t *testing.T) {
	name := filepath.Join("testdata", "broken", "engine2.hcl")
	cfg, diags := Load(name)
	var buf bytes.Buffer
	if err := WriteDiagnostics(&buf, cfg.Files, diags[:2]); err != nil {
		t.Fatal(err)
	}
	want := `testdata/broken/engine2.hcl:2:21: error: engine.concurrency: want a whole number, not 2.5
  2 |   concurrency     = 2.5
    |                     ^^^
testdata/broken/engine2.hcl:3:21: error: engine.health_interval: duration must be greater than 0, not "0s"
  3 |   health_interval = "0s"
    |                     ^^^^
`
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestWriteDiagnosticsSyntaxError: a file that does not parse still prints
// FILE:LINE:COL and its source line.
func TestWriteDiagnosticsSyntaxError(t *testing.T) {
	name := filepath.Join("testdata", "broken", "syntax.hcl")
	cfg, diags := Load(name)
	for _, files := range []map[string]*hcl.File{cfg.Files, nil} { // nil: read from disk
		var buf bytes.Buffer
		if err := WriteDiagnostics(&buf, files, diags); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		first, _, _ := strings.Cut(out, "\n")
		if want := name + ":2:20: error: Invalid multi-line string"; first != want {
			t.Errorf("first line %q, want %q", first, want)
		}
		if !strings.Contains(out, "  2 |   log_level = \"info\n    |                    ^\n") {
			t.Errorf("no snippet in:\n%s", out)
		}
		if !strings.Contains(out, "  Quoted strings may not be split") {
			t.Errorf("no detail in:\n%s", out)
		}
	}
}

func TestWriteDiagnosticsShapes(t *testing.T) {
	src := []byte("a {\n\tb = \"x\"\n\tc = [\n\t  1,\n\t]\n}\n")
	file := &hcl.File{Bytes: src}
	rng := func(line, col, byt, endLine, endCol, endByte int) *hcl.Range {
		return &hcl.Range{Filename: "t.hcl",
			Start: hcl.Pos{Line: line, Column: col, Byte: byt},
			End:   hcl.Pos{Line: endLine, Column: endCol, Byte: endByte}}
	}
	diags := hcl.Diagnostics{
		{Severity: hcl.DiagWarning, Summary: "tabs line up", Subject: rng(2, 6, 9, 2, 9, 12)},
		{Severity: hcl.DiagError, Summary: "several lines", Detail: "one\ntwo", Subject: rng(3, 6, 18, 5, 3, 27)},
		{Severity: hcl.DiagError, Summary: "no range"},
		{Severity: hcl.DiagError, Summary: "file only", Subject: &hcl.Range{Filename: "t.hcl"}},
		{Severity: hcl.DiagError, Summary: "file gone", Subject: rng(1, 1, 0, 1, 2, 1)},
	}
	diags[4].Subject.Filename = filepath.Join(t.TempDir(), "gone.hcl")
	var buf bytes.Buffer
	if err := WriteDiagnostics(&buf, map[string]*hcl.File{"t.hcl": file}, diags); err != nil {
		t.Fatal(err)
	}
	want := "t.hcl:2:6: warning: tabs line up\n" +
		"  2 | \tb = \"x\"\n" +
		"    | \t    ^^^\n" +
		"t.hcl:3:6: error: several lines\n" +
		"  3 | \tc = [\n" +
		"    | \t    ^\n" +
		"  one\n  two\n" +
		"error: no range\n" +
		"t.hcl: error: file only\n" +
		diags[4].Subject.Filename + ":1:1: error: file gone\n"
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, os.ErrClosed }

func TestWriteDiagnosticsError(t *testing.T) {
	err := WriteDiagnostics(failWriter{}, nil, hcl.Diagnostics{{Summary: "x"}})
	if err == nil || !strings.Contains(err.Error(), "write diagnostics") {
		t.Errorf("err = %v", err)
	}
}
