package simulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/microengine/microengine/shared"
)

// Sample is one artifact the simulator offers, with the verdict a correct
// engine gives.
type Sample struct {
	Name    string              `json:"name"`
	Type    shared.ArtifactType `json:"type"`
	Content []byte              `json:"-"`
	// Expected is the right verdict; "" when the sample is not scored
	// (answers to it count as answered, neither correct nor wrong).
	Expected shared.Verdict `json:"verdict"`
	Mimetype string         `json:"mimetype,omitempty"`
	// CaughtBy names the plugins that should flag the sample (manifest
	// caught_by); nil when not said, and then every plugin is expected
	// to give the sample's verdict.
	CaughtBy []string `json:"caught_by,omitempty"`
}

// EICAR returns the standard 68-byte EICAR test file. It is assembled from
// two halves so this source file is not itself a match.
func EICAR() []byte {
	return []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)
}

// DefaultSamples is EICAR (malicious) and a few harmless files (benign).
func DefaultSamples() []Sample {
	return []Sample{
		{Name: "eicar.com", Type: shared.ArtifactFile, Content: EICAR(), Expected: shared.VerdictMalicious, Mimetype: "application/octet-stream"},
		{Name: "hello.txt", Type: shared.ArtifactFile, Content: []byte("Hello, marketplace.\n"), Expected: shared.VerdictBenign, Mimetype: "text/plain"},
		{Name: "lorem.txt", Type: shared.ArtifactFile, Content: []byte(strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit. ", 40)), Expected: shared.VerdictBenign, Mimetype: "text/plain"},
		{Name: "data.json", Type: shared.ArtifactFile, Content: []byte(`{"harmless": true, "numbers": [1, 2, 3]}` + "\n"), Expected: shared.VerdictBenign, Mimetype: "application/json"},
	}
}

// Marker makes a sample of a marker string (for the test signatures in
// testdata/signatures) whose expected verdict the caller knows: "VERDICT:TEXT",
// e.g. "malicious:MICROENGINE-TEST-MARKER-ALPHA".
func Marker(spec string) (Sample, error) {
	v, text, ok := strings.Cut(spec, ":")
	if !ok || text == "" {
		return Sample{}, fmt.Errorf("marker %q: want VERDICT:TEXT", spec)
	}
	verdict, err := shared.ParseVerdict(v)
	if err != nil {
		return Sample{}, fmt.Errorf("marker %q: %w", spec, err)
	}
	return Sample{Name: "marker-" + strings.ToLower(v), Type: shared.ArtifactFile, Expected: verdict, Mimetype: "text/plain",
		Content: []byte("a harmless file holding a test marker: " + text + "\n")}, nil
}

// ManifestFile, in a sample folder, lists the samples and their verdicts:
//
//	{"samples": [{"file": "eicar.com", "verdict": "malicious", "caught_by": ["eicar", "clamav"]},
//	             {"file": "notes.txt", "verdict": "benign", "mimetype": "text/plain"},
//	             {"url": "http://example.com/x", "verdict": "unknown"}]}
//
// Without one, a folder's subfolders named after verdicts (malicious/,
// benign/, suspicious/, unknown/) hold the files expected to get them.
const ManifestFile = "manifest.json"

type manifest struct {
	Samples []struct {
		File     string   `json:"file"`
		URL      string   `json:"url"`
		Verdict  string   `json:"verdict"`
		Mimetype string   `json:"mimetype"`
		CaughtBy []string `json:"caught_by"`
	} `json:"samples"`
}

// LoadDir reads a sample folder (see ManifestFile).
func LoadDir(dir string) ([]Sample, error) {
	raw, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	switch {
	case err == nil:
		return loadManifest(dir, raw)
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read the sample manifest: %w", err)
	}
	var out []Sample
	for _, v := range []shared.Verdict{shared.VerdictMalicious, shared.VerdictBenign, shared.VerdictSuspicious, shared.VerdictUnknown} {
		entries, err := os.ReadDir(filepath.Join(dir, string(v)))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read samples: %w", err)
		}
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, string(v), e.Name()))
			if err != nil {
				return nil, fmt.Errorf("read sample: %w", err)
			}
			out = append(out, Sample{Name: string(v) + "/" + e.Name(), Type: shared.ArtifactFile, Content: data, Expected: v})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no samples in %s: add %s or malicious/ and benign/ subfolders", dir, ManifestFile)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func loadManifest(dir string, raw []byte) ([]Sample, error) {
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("parse %s: %w", ManifestFile, err)
	}
	var out []Sample
	for i, e := range m.Samples {
		s := Sample{Mimetype: e.Mimetype, CaughtBy: e.CaughtBy}
		if e.Verdict != "" {
			v, err := shared.ParseVerdict(e.Verdict)
			if err != nil {
				return nil, fmt.Errorf("%s: sample %d: %w", ManifestFile, i+1, err)
			}
			s.Expected = v
		}
		switch {
		case e.File != "" && e.URL == "":
			data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(e.File)))
			if err != nil {
				return nil, fmt.Errorf("%s: sample %d: %w", ManifestFile, i+1, err)
			}
			s.Name, s.Type, s.Content = e.File, shared.ArtifactFile, data
		case e.URL != "" && e.File == "":
			s.Name, s.Type, s.Content = e.URL, shared.ArtifactURL, []byte(e.URL)
		default:
			return nil, fmt.Errorf("%s: sample %d: give either file or url", ManifestFile, i+1)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no samples", ManifestFile)
	}
	return out, nil
}
