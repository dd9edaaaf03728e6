package conformance

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/microengine/microengine/shared"
)

// maxSampleFile bounds one sample read from a folder: samples are held in
// memory and scanned many times over (chunkings, embeddings, hostile
// variants).
const maxSampleFile = 32 << 20

// LoadSamples reads a folder of samples named by their expected verdict:
// every file under DIR/malicious/ is a malicious sample (of any family),
// under DIR/benign/ benign, under DIR/suspicious/ suspicious. A file's
// name is its path relative to DIR. Anything else in DIR is an error, so a
// misnamed folder is not silently left out.
func LoadSamples(dir string) ([]shared.Sample, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("samples: %w", err)
	}
	var out []shared.Sample
	for _, e := range entries {
		verdict, err := shared.ParseVerdict(e.Name())
		if err != nil || !e.IsDir() || verdict == shared.VerdictUnknown {
			return nil, fmt.Errorf("samples: %s: want only folders named malicious, benign or suspicious", filepath.Join(dir, e.Name()))
		}
		err = filepath.WalkDir(filepath.Join(dir, e.Name()), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			if !info.Mode().IsRegular() {
				return fmt.Errorf("%s: not a regular file", path)
			}
			if info.Size() > maxSampleFile {
				return fmt.Errorf("%s: %d bytes; samples are at most %d", path, info.Size(), maxSampleFile)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, path)
			out = append(out, shared.Sample{Name: filepath.ToSlash(rel), Content: b, Verdict: verdict})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("samples: %w", err)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("samples: no files under %s/malicious, %s/benign or %s/suspicious", dir, dir, dir)
	}
	return out, nil
}
