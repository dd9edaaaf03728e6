package crash

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRecorderRealPanics builds a small program and crashes it three ways,
// so the parser is tested against what this Go runtime really writes.
func TestRecorderRealPanics(t *testing.T) {
	dir := t.TempDir()
	src := `package main

import "os"

var m map[string]int

func scan(b string) {
	if b == "map" {
		m[b] = 1
	}
	if b == "nil" {
		var p *struct{ a int }
		println(p.a)
	}
	if b == "value" {
		panic(os.ErrNotExist)
	}
}

func main() {
	os.Stderr.WriteString("{\"@level\":\"info\",\"@message\":\"panic: not a crash, a log line\"}\n")
	done := make(chan bool)
	go func() { scan(os.Args[1]); done <- true }()
	<-done
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module crasher\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "crasher")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, tc := range []struct{ arg, want string }{
		{"map", "panic: assignment to entry in nil map (main.go:9)"},
		{"nil", "panic: runtime error: invalid memory address or nil pointer dereference (main.go:13)"},
		{"value", "panic: file does not exist (main.go:16)"},
	} {
		var rec Recorder
		cmd := exec.Command(bin, tc.arg)
		cmd.Stderr = &oneByteWriter{&rec} // writes arrive in any pieces
		if err := cmd.Run(); err == nil {
			t.Fatalf("%s: the program did not crash", tc.arg)
		}
		rep, ok := rec.Report()
		if !ok {
			t.Fatalf("%s: no report recorded", tc.arg)
		}
		if got := rep.String(); got != tc.want {
			t.Errorf("%s: report %q, want %q", tc.arg, got, tc.want)
		}
		if rep.Function != "main.scan" {
			t.Errorf("%s: function %q, want main.scan", tc.arg, rep.Function)
		}
	}
}

type oneByteWriter struct{ w *Recorder }

func (o *oneByteWriter) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := o.w.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

func TestParseSkipsRuntimeFrames(t *testing.T) {
	report := `fatal error: unexpected signal during runtime execution
[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x7f]

goroutine 35 gp=0xc000102a80 m=5 mp=0xc000100008 [syscall]:
runtime.throw({0x9b1a2c?, 0x0?})
	/usr/lib/go/src/runtime/panic.go:1101 +0x48 fp=0xc0000a3a48 sp=0xc0000a3a18 pc=0x4778a8
runtime.cgocall(0x8a3c40, 0xc0000a3b08)
	/usr/lib/go/src/runtime/cgocall.go:167 +0x4b
github.com/example/yara._Cfunc_yr_rules_scan_mem(0x1, 0x2)
	_cgo_gotypes.go:1042 +0x4b
main.main()
	/src/main.go:5 +0x10

goroutine 1 [chan receive]:
main.other()
	/src/other.go:1 +0x10`
	rep := Parse(strings.Split(report, "\n"))
	want := Report{
		Message:  "fatal error: unexpected signal during runtime execution",
		Function: "github.com/example/yara._Cfunc_yr_rules_scan_mem",
		Location: "_cgo_gotypes.go:1042",
	}
	if rep != want {
		t.Errorf("got %+v, want %+v", rep, want)
	}
}

// A panic inside the standard library (a short slice handed to
// encoding/binary) is quoted at the plugin's frame that made the call: the
// library's line says nothing about which of the plugin's reads was short.
func TestParseQuotesThePluginsFrameOverTheStandardLibrary(t *testing.T) {
	report := `panic: runtime error: index out of range [3] with length 0

goroutine 23 [running]:
encoding/binary.littleEndian.Uint32(...)
	/usr/local/go/src/encoding/binary/binary.go:91
main.poison({0x2a2b2c, 0x3, 0x8})
	/src/plugins/boom/parse.go:30 +0x167
main.(*scanner).Scan(0xc000010000, {0x1, 0x2})
	/src/plugins/boom/scanner.go:84 +0x2bc`
	rep := Parse(strings.Split(report, "\n"))
	want := Report{
		Message:  "panic: runtime error: index out of range [3] with length 0",
		Function: "main.poison",
		Location: "parse.go:30",
	}
	if rep != want {
		t.Errorf("got %+v, want %+v", rep, want)
	}
	rep = Parse(strings.Split(`panic: boom

goroutine 5 [running]:
bytes.(*Buffer).grow(0x1, 0x2)
	/usr/local/go/src/bytes/buffer.go:151 +0x1
github.com/example/parser.(*Reader).Next(0x1)
	/src/parser/reader.go:12 +0x1`, "\n"))
	if rep.Location != "reader.go:12" {
		t.Errorf("got %+v; want the module's frame below the standard library's", rep)
	}
	// Only the standard library on the stack: its first frame, then.
	rep = Parse(strings.Split(`panic: boom

goroutine 5 [running]:
bytes.(*Buffer).grow(0x1, 0x2)
	/usr/local/go/src/bytes/buffer.go:151 +0x1`, "\n"))
	if rep.Location != "buffer.go:151" {
		t.Errorf("got %+v; want the standard library's frame when there is no other", rep)
	}
}

func TestRecorderIgnoresOrdinaryOutput(t *testing.T) {
	var rec Recorder
	_, _ = rec.Write([]byte("an ordinary log line\n{\"@message\":\"panic: in JSON\"}\nSIGNAL names in prose: are not reports\n"))
	if rep, ok := rec.Report(); ok {
		t.Errorf("a report from ordinary output: %+v", rep)
	}
	_, _ = rec.Write([]byte("SIGSEGV: segmentation violation\nPC=0x7f m=0 sigcode=1\n"))
	rep, ok := rec.Report()
	if !ok || rep.String() != "SIGSEGV: segmentation violation" {
		t.Errorf("got %+v, %v; want the signal line", rep, ok)
	}
}

// A process that exits without a report (log.Fatal, os.Exit) is known by
// its last line: a plain one as written, a JSON log entry by its message
// and error.
func TestRecorderLastLine(t *testing.T) {
	var rec Recorder
	if got := rec.LastLine(); got != "" {
		t.Errorf("nothing written: %q", got)
	}
	_, _ = rec.Write([]byte("starting\n2026/11/30 07:52:06 cannot open rules: permission denied\n\n"))
	if got, want := rec.LastLine(), "2026/11/30 07:52:06 cannot open rules: permission denied"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	_, _ = rec.Write([]byte(`{"@level":"error","@message":"giving up","@module":"p","error":"backend gone"}` + "\n"))
	if got, want := rec.LastLine(), "giving up: backend gone"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	_, _ = rec.Write([]byte("no newline at the end"))
	if got, want := rec.LastLine(), "no newline at the end"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// A report that follows does not change it.
	_, _ = rec.Write([]byte("\npanic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/x/main.go:3 +0x1\n"))
	if got, want := rec.LastLine(), "no newline at the end"; got != want {
		t.Errorf("after a report: got %q, want %q", got, want)
	}
}
