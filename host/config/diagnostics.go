package config

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// WriteDiagnostics prints diags the way compilers do, one per paragraph:
//
//	engine.hcl:12:13: error: plugin "clamav": timeout: invalid duration "30"
//	   12 |   timeout = "30"
//	      |             ^^^^
//	  Write a duration as a string with a unit, such as "30s".
//
// The first line of each is FILE:LINE:COL as the user named the file, so
// editors and terminals can jump to it. files supplies the source for the
// snippet (Config.Files); a file missing from it is read from disk, so
// diagnostics of a file that failed to read or parse still print, and a
// nil map works. A diagnostic without a range prints as "error: summary".
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics) error {
	bw := bufio.NewWriter(w)
	sources := map[string][]byte{}
	source := func(name string) []byte {
		if src, ok := sources[name]; ok {
			return src
		}
		var src []byte
		if f := files[name]; f != nil {
			src = f.Bytes
		} else if b, err := os.ReadFile(name); err == nil {
			src = b
		}
		sources[name] = src // nil too: read once, print without a snippet
		return src
	}

	for _, diag := range diags {
		severity := "error"
		if diag.Severity == hcl.DiagWarning {
			severity = "warning"
		}
		s := diag.Subject
		switch {
		case s == nil || s.Filename == "":
			fmt.Fprintf(bw, "%s: %s\n", severity, diag.Summary)
		case s.Start.Line == 0:
			fmt.Fprintf(bw, "%s: %s: %s\n", s.Filename, severity, diag.Summary)
		default:
			fmt.Fprintf(bw, "%s:%d:%d: %s: %s\n", s.Filename, s.Start.Line, s.Start.Column, severity, diag.Summary)
			writeSnippet(bw, source(s.Filename), *s)
		}
		if d := strings.TrimSpace(diag.Detail); d != "" {
			for _, line := range strings.Split(d, "\n") {
				fmt.Fprintf(bw, "  %s\n", line)
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write diagnostics: %w", err)
	}
	return nil
}

// writeSnippet prints the subject's first line with a caret underline.
// Offsets are taken from Byte, which hcl keeps exact; the underline copies
// the line's tabs so it lines up however wide the terminal draws them.
func writeSnippet(w io.Writer, src []byte, r hcl.Range) {
	if src == nil || r.Start.Byte < 0 || r.Start.Byte > len(src) {
		return
	}
	lineStart := bytes.LastIndexByte(src[:r.Start.Byte], '\n') + 1
	lineEnd := len(src)
	if i := bytes.IndexByte(src[r.Start.Byte:], '\n'); i >= 0 {
		lineEnd = r.Start.Byte + i
	}
	line := strings.TrimRight(string(src[lineStart:lineEnd]), "\r")
	end := r.End.Byte
	if end > lineStart+len(line) || r.End.Line != r.Start.Line {
		end = lineStart + len(line) // a range over lines: underline to the end of the first
	}
	if end < r.Start.Byte {
		end = r.Start.Byte
	}

	num := strconv.Itoa(r.Start.Line)
	gutter := strings.Repeat(" ", len(num))
	fmt.Fprintf(w, "  %s | %s\n", num, line)

	var pad strings.Builder
	for _, c := range string(src[lineStart:r.Start.Byte]) {
		if c == '\t' {
			pad.WriteRune('\t')
		} else {
			pad.WriteRune(' ')
		}
	}
	width := max(utf8.RuneCount(src[r.Start.Byte:end]), 1)
	fmt.Fprintf(w, "  %s | %s%s\n", gutter, pad.String(), strings.Repeat("^", width))
}
