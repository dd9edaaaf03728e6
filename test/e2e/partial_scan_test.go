//go:build e2e

package e2e

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microengine/microengine/internal/devclamd"
)

// The shipped marker signature, split so this file matches none.
const partialMarker = "MICROENGINE-TEST-" + "MARKER-ALPHA"

// writeZip writes a zip whose members are zeros bytes of zeros followed by
// tail, streamed: the padding never sits in memory.
func writeZip(t *testing.T, path string, members ...zipMember) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	pad := make([]byte, 1<<20)
	for _, m := range members {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: m.name, Method: zip.Deflate})
		if err != nil {
			t.Fatal(err)
		}
		for n := m.zeros; n > 0; n -= len(pad) {
			if _, err := w.Write(pad[:min(n, len(pad))]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := w.Write(m.tail); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// zipMember is zeros bytes of zeros, then tail.
type zipMember struct {
	name  string
	zeros int
	tail  []byte
}

func nestedZip(t *testing.T, depth int, inner []byte) []byte {
	t.Helper()
	b := inner
	for i := range depth {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, err := zw.Create(fmt.Sprintf("level%d.zip", i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(w, bytes.NewReader(b))
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		b = buf.Bytes()
	}
	return b
}

// TestScanNeverCleanOnPartialScan scans padded and nested archives with
// `microengine scan` through the real clamav plugin: with the clamd the
// plugin runs itself, and with a clamd someone else runs, configured as
// Debian ships it (MaxFileSize 25M, MaxScanSize 100M, MaxRecursion 16,
// AlertExceedsMax off), which answers OK for all of them. None may be
// reported clean; plain text stays clean.
func TestScanNeverCleanOnPartialScan(t *testing.T) {
	files := t.TempDir()
	archives := []string{
		filepath.Join(files, "padded-30MiB.zip"),
		filepath.Join(files, "padded-101MiB.zip"),
		filepath.Join(files, "nested-20.zip"),
	}
	writeZip(t, archives[0], zipMember{"padded.bin", 30 << 20, []byte(partialMarker)})
	writeZip(t, archives[1], zipMember{"padded.bin", 101 << 20, []byte(partialMarker)})
	if err := os.WriteFile(archives[2], nestedZip(t, 20, []byte(partialMarker)), 0o644); err != nil {
		t.Fatal(err)
	}
	clean := filepath.Join(files, "clean.txt")
	if err := os.WriteFile(clean, []byte("plain text, nothing in it\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	sigs, err := devclamd.RepoSignatureDir()
	if err != nil {
		t.Fatal(err)
	}
	debian := devclamd.StartT(t, devclamd.Options{Config: []string{"MaxFileSize 25M", "MaxScanSize 100M", "MaxRecursion 16", "AlertExceedsMax no"}})
	for _, tc := range []struct{ name, config string }{
		{"managed clamd", fmt.Sprintf("database = %q", sigs)},
		{"external clamd with Debian's limits", fmt.Sprintf("address = %q", debian.Address())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "e2e-partial-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			install(t, bins.clamavV1, filepath.Join(dir, "microengine-plugin-clamav"))
			cfg := fmt.Sprintf(`engine {
  data_dir = "./data"
}
plugin "clamav" {
  path    = "./microengine-plugin-clamav"
  timeout = "2m"
  config {
    %s
    timeout = "2m"
  }
}
`, tc.config)
			if err := os.WriteFile(filepath.Join(dir, "engine.hcl"), []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bins.host, append([]string{"scan", "-config", filepath.Join(dir, "engine.hcl")}, append(archives, clean)...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			_ = cmd.Run() // exit 1 or 2: found or unknown
			out := stdout.String()
			for _, a := range archives {
				line := lineOf(out, a)
				if line == "" || strings.HasSuffix(line, ": OK") {
					t.Errorf("%s: %q, want FOUND or UNKNOWN\nstdout:\n%s\nstderr:\n%s", filepath.Base(a), line, out, stderr.String())
				}
				t.Logf("%s", line)
			}
			if line := lineOf(out, clean); line != clean+": OK" {
				t.Errorf("plain text: %q, want OK\nstderr:\n%s", line, stderr.String())
			}
		})
	}
}

func lineOf(out, file string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, file+": ") {
			return l
		}
	}
	return ""
}
