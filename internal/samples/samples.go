// Package samples writes the sample set that `make run`, the end-to-end
// tests and benchmarks use: EICAR, the harmless markers that the repo's test
// signatures (testdata/signatures) and YARA rules (testdata/yara) flag —
// some only ClamAV catches, some only YARA, some both — a zip that is only
// flagged for what it contains, and clean files that neither catches, with
// the verdict each must get, in the simulator's manifest format.
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

// yaraPrefix starts the markers only the project's YARA rules know.
const yaraPrefix = "MICROENGINE-YARA-" + "TEST-"

// YaraMarker returns content holding the named YARA test marker (FAMILY,
// SCORE-MID, HUNTING, SCRIPT, ...; see testdata/yara/README.md).
func YaraMarker(name string) []byte {
	return []byte("a harmless file holding a YARA test marker: " + yaraPrefix + name + "\n")
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
	// CaughtBy names the plugins expected to flag the sample, so a
	// scoreboard can tell a backend's miss from its detection.
	CaughtBy []string `json:"caught_by,omitempty"`
	content  []byte
}

// Set returns the sample set, content included.
func Set() ([]Entry, error) {
	zipped, err := Zip("inner.txt", Marker("ZIPPED"))
	if err != nil {
		return nil, err
	}
	return []Entry{
		{File: "eicar.com", Verdict: "malicious", Mimetype: "application/octet-stream", content: EICAR(), CaughtBy: []string{"eicar", "clamav"},
			Note: "eicar and clamav flag it"},
		{File: "marker-alpha.txt", Verdict: "malicious", Mimetype: "text/plain", content: Marker("ALPHA"), CaughtBy: []string{"clamav", "yara"},
			Note: "both backends: clamav .ndb signature and the yara rule Shared_With_ClamAV"},
		{File: "marker-bravo.bin", Verdict: "malicious", Mimetype: "application/octet-stream", content: append([]byte{0, 1, 2, 3}, Marker("BRAVO")...),
			CaughtBy: []string{"clamav"}, Note: "clamav only: .ndb signature"},
		{File: "zipped-marker.zip", Verdict: "malicious", Mimetype: "application/zip", content: zipped, CaughtBy: []string{"clamav"},
			Note: "clamav only: .ldb signature that matches only inside a zip"},
		{File: "yara-family.txt", Verdict: "malicious", Mimetype: "text/plain", content: YaraMarker("FAMILY"), CaughtBy: []string{"yara"},
			Note: "yara only: family from meta malware_family"},
		{File: "yara-score-high.bin", Verdict: "malicious", Mimetype: "application/octet-stream", content: YaraMarker("SCORE-HIGH"), CaughtBy: []string{"yara"},
			Note: "yara only: meta score 80"},
		{File: "dropper.vbs", Verdict: "malicious", Mimetype: "text/vbscript", content: YaraMarker("SCRIPT"), CaughtBy: []string{"yara"},
			Note: "yara only, through the filename external: the same marker in a .txt is clean"},
		{File: "yara-score-mid.txt", Verdict: "suspicious", Mimetype: "text/plain", content: YaraMarker("SCORE-MID"), CaughtBy: []string{"yara"},
			Note: "yara only: meta score 50 is suspicious"},
		{File: "yara-hunting.txt", Verdict: "benign", Mimetype: "text/plain", content: YaraMarker("HUNTING"),
			Note: "a hunting rule matches: reported in the answer's metadata, never deciding"},
		{File: "bare-zipped-marker.txt", Verdict: "benign", Mimetype: "text/plain", content: Marker("ZIPPED"), Note: "the zip-only marker outside a zip is clean"},
		{File: "hello.txt", Verdict: "benign", Mimetype: "text/plain", content: []byte("Hello, marketplace.\n"), Note: "neither backend"},
		{File: "lorem.txt", Verdict: "benign", Mimetype: "text/plain", content: []byte(strings.Repeat("Lorem ipsum dolor sit amet. ", 200)), Note: "neither backend"},
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
