// Package crash reads the report the Go runtime writes to stderr when a
// process dies of a panic or a fatal error, so that a plugin's crash can be
// quoted in one line ("panic: assignment to entry in nil map (main.go:89)")
// instead of as a goroutine dump, or not at all.
//
// The host and the conformance suite tee a plugin's raw stderr into a
// Recorder (go-plugin's ClientConfig.Stderr, via shared/launch's Config).
package crash

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"sync"
)

// Report is what a crashed process said about its death.
type Report struct {
	// Message is the runtime's first line: "panic: …", "fatal error: …"
	// or "SIGSEGV: segmentation violation" (a crash in C code).
	Message string
	// Function and Location name the first frame of the crashing goroutine
	// outside the Go runtime and the standard library (the library's when
	// it is all there is): where the plugin's own code went wrong.
	// Location is file:line with the file's base name.
	Function string
	Location string
}

// String is the one-line form: the message and, when known, the frame's
// file:line in parentheses.
func (r Report) String() string {
	if r.Location == "" {
		return r.Message
	}
	return r.Message + " (" + r.Location + ")"
}

// Recorder is an io.Writer that watches a process's stderr for the start
// of a crash report and keeps the report's first lines. Everything else
// passes through without being kept, so a long-lived process costs nothing.
type Recorder struct {
	mu      sync.Mutex
	partial []byte
	lines   []string // the crash report so far; nil until one starts
	// last is the last non-empty line before any report, in a buffer
	// reused line after line: what a process that exits without a report
	// (log.Fatal, os.Exit) said last.
	last []byte
}

// reportLines bounds how much of a report is kept: the message, a signal
// line, and the crashing goroutine's first frames are all that is read.
const (
	reportLines = 24
	maxLine     = 1024
)

// Write records p. It never fails.
func (r *Recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	data := p
	if len(r.partial) > 0 {
		data = append(r.partial, p...)
		r.partial = nil
	}
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		r.line(data[:i])
		data = data[i+1:]
	}
	if len(data) > 0 {
		if len(data) > maxLine {
			data = data[:maxLine]
		}
		r.partial = append([]byte(nil), data...)
	}
	return len(p), nil
}

func (r *Recorder) line(b []byte) {
	if len(b) > maxLine {
		b = b[:maxLine]
	}
	if r.lines == nil {
		t := bytes.TrimRight(b, "\r")
		if !isReportStart(string(t)) {
			if len(bytes.TrimSpace(t)) > 0 {
				r.last = append(r.last[:0], t...)
			}
			return
		}
	}
	s := strings.TrimRight(string(b), "\r")
	if r.lines == nil {
		r.lines = []string{s}
		return
	}
	if len(r.lines) < reportLines {
		r.lines = append(r.lines, s)
	}
}

func isReportStart(s string) bool {
	if strings.HasPrefix(s, "panic: ") || strings.HasPrefix(s, "fatal error: ") {
		return true
	}
	// A signal in non-Go code: "SIGSEGV: segmentation violation".
	sig, _, ok := strings.Cut(s, ": ")
	return ok && len(sig) > 3 && strings.HasPrefix(sig, "SIG") && strings.ToUpper(sig) == sig && !strings.Contains(sig, " ")
}

// LastLine is the last line the process wrote before any crash report
// (cut to 300 bytes), "" when none: for a process that exits without one,
// the message of a log.Fatal, say. Of a JSON log entry (shared.Logger's)
// it gives the message and the error, if any.
func (r *Recorder) LastLine() string {
	r.mu.Lock()
	last := string(r.last)
	if r.lines == nil && len(bytes.TrimSpace(r.partial)) > 0 && !isReportStart(string(r.partial)) {
		last = string(r.partial) // a last line without its newline
	}
	r.mu.Unlock()
	last = strings.TrimSpace(last)
	var entry struct {
		Message string `json:"@message"`
		Error   any    `json:"error"`
	}
	if strings.HasPrefix(last, "{") && json.Unmarshal([]byte(last), &entry) == nil && entry.Message != "" {
		last = entry.Message
		if entry.Error != nil {
			last += ": " + fmt.Sprint(entry.Error)
		}
	}
	if len(last) > 300 {
		last = last[:300] + "…"
	}
	return last
}

// Report returns the crash report seen so far, and false when the process
// has written none.
func (r *Recorder) Report() (Report, bool) {
	r.mu.Lock()
	lines := r.lines
	if lines == nil && r.partial != nil && isReportStart(string(r.partial)) {
		lines = []string{string(r.partial)}
	}
	lines = append([]string(nil), lines...)
	r.mu.Unlock()
	if len(lines) == 0 {
		return Report{}, false
	}
	return Parse(lines), true
}

// Parse reads a crash report given as lines, the first being the message.
func Parse(lines []string) Report {
	rep := Report{Message: strings.TrimSpace(lines[0])}
	// Frames come in pairs after "goroutine N [...]:": a function line,
	// then a tab-indented "file:line +0x…" line.
	// The first frame outside the standard library is the plugin's own
	// (a short slice handed to encoding/binary panics in binary.go, but
	// the fault is the caller's); the standard library's first frame only
	// when there is no other.
	inGoroutine := false
	var std Report
	for i := 1; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.HasPrefix(l, "goroutine "):
			if inGoroutine {
				return orStd(rep, std) // only the crashing goroutine counts
			}
			inGoroutine = true
		case !inGoroutine || l == "" || strings.HasPrefix(l, "\t"):
		case runtimeFrame(l) || i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "\t"):
		case stdFrame(l):
			if std.Function == "" {
				std.Function, std.Location = funcName(l), location(lines[i+1])
			}
		default:
			rep.Function = funcName(l)
			rep.Location = location(lines[i+1])
			return rep
		}
	}
	return orStd(rep, std)
}

// orStd is rep with the standard library's frame when no other was found.
func orStd(rep, std Report) Report {
	if rep.Function == "" {
		rep.Function, rep.Location = std.Function, std.Location
	}
	return rep
}

// stdFrame reports a frame in the standard library: its import path's
// first element has no dot ("encoding/binary.…", "bytes.…"), and it is
// not the main package.
func stdFrame(fn string) bool {
	first := fn
	if i := strings.Index(first, "/"); i >= 0 {
		first = first[:i] // an import path's first element
	} else if i := strings.Index(first, "."); i >= 0 {
		first = first[:i] // a package without slashes: its name
	}
	return first != "main" && !strings.Contains(first, ".")
}

// runtimeFrame reports frames that say where the runtime was, not where
// the plugin went wrong.
func runtimeFrame(fn string) bool {
	return strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "panic(") ||
		strings.HasPrefix(fn, "created by ")
}

// funcName drops a frame's arguments: "main.(*s).Scan(0xc0001, 0x2)" is
// "main.(*s).Scan".
func funcName(l string) string {
	l = strings.TrimSpace(l)
	if strings.HasSuffix(l, ")") {
		if i := strings.LastIndex(l, "("); i > 0 {
			l = l[:i]
		}
	}
	return l
}

// location turns "\t/src/plugin/main.go:89 +0x1d" into "main.go:89".
func location(l string) string {
	l = strings.TrimSpace(l)
	if i := strings.LastIndex(l, " +0x"); i >= 0 {
		l = l[:i]
	}
	return path.Base(l)
}
