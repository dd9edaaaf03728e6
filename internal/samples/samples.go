// Package samples writes the sample set that `make run`, the end-to-end
// tests and benchmarks use: EICAR, the harmless markers that the repo's test
// signatures (testdata/signatures) flag, a zip that is only flagged for what
// it contains, and clean files — with the verdict each must get, in the
// simulator's manifest format.
package samples

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The markers are assembled at run time so this source file does not
// itself match the signatures.
const markerPrefix = "MICROENGINE-TEST-" + "MARKER-"

// EICAR is the standard 68-byte test file, in two halves for the same
// reason.
func EICAR() []byte {
	return []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)
}

// Marker returns content holding the named marker (ALPHA, BRAVO, ZIPPED).
func Marker(name string) []byte {
	return []byte("a harmless file holding a test marker: " + markerPrefix + name + "\n")
}

// Zip returns a zip archive holding one file with the given content.
func Zip(name string, content []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create(name)
	if err != nil {
		return nil, fmt.Errorf("zip: %w", err)
	}
	if _, err := w.Write(content); err != nil {
		return nil, fmt.Errorf("zip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("zip: %w", err)
	}
	return buf.Bytes(), nil
}

// Entry is one sample file and the verdict a correct engine gives it.
type Entry struct {
	File     string `json:"file"`
	Verdict  string `json:"verdict"`
	Mimetype string `json:"mimetype,omitempty"`
	Note     string `json:"note,omitempty"`
	content  []byte
}

// Set returns the sample set, content included.
func Set() ([]Entry, error) {
	zipped, err := Zip("inner.txt", Marker("ZIPPED"))
	if err != nil {
		return nil, err
	}
	return []Entry{
		{File: "eicar.com", Verdict: "malicious", Mimetype: "application/octet-stream", content: EICAR(), Note: "both plugins flag it"},
		{File: "marker-alpha.txt", Verdict: "malicious", Mimetype: "text/plain", content: Marker("ALPHA"), Note: "clamav .ndb signature"},
		{File: "marker-bravo.bin", Verdict: "malicious", Mimetype: "application/octet-stream", content: append([]byte{0, 1, 2, 3}, Marker("BRAVO")...), Note: "clamav .ndb signature"},
		{File: "zipped-marker.zip", Verdict: "malicious", Mimetype: "application/zip", content: zipped, Note: "clamav .ldb signature that matches only inside a zip"},
		{File: "bare-zipped-marker.txt", Verdict: "benign", Mimetype: "text/plain", content: Marker("ZIPPED"), Note: "the zip-only marker outside a zip is clean"},
		{File: "hello.txt", Verdict: "benign", Mimetype: "text/plain", content: []byte("Hello, marketplace.\n")},
		{File: "lorem.txt", Verdict: "benign", Mimetype: "text/plain", content: []byte(strings.Repeat("Lorem ipsum dolor sit amet. ", 200))},
		{File: "empty", Verdict: "benign", Mimetype: "application/octet-stream", content: nil},
		{File: "picture.png", Verdict: "unknown", Mimetype: "image/png", content: []byte("\x89PNG\r\n\x1a\nnot really an image"), Note: "engine.hcl rejects image/*: answered unknown, bid 0"},
	}, nil
}

// Write writes the sample set and its manifest.json into dir.
func Write(dir string) error {
	set, err := Set()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("samples: %w", err)
	}
	for _, e := range set {
		if err := os.WriteFile(filepath.Join(dir, e.File), e.content, 0o644); err != nil {
			return fmt.Errorf("samples: %w", err)
		}
	}
	b, err := json.MarshalIndent(struct {
		Samples []Entry `json:"samples"`
	}{set}, "", "  ")
	if err != nil {
		return fmt.Errorf("samples: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, "manifest.json"), append(b, '\n'), 0o644)
}
