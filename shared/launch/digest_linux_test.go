package launch

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// anyAge remembers a file however recently it changed (the kernel's
// coarse clock may stamp a file a little behind time.Now).
const anyAge = -time.Hour

// writeBinary writes content at path, as a build would.
func writeBinary(t *testing.T, path string, content []byte) {
	t.Helper()
	if err := os.WriteFile(path, content, 0o755); err != nil {
		t.Fatal(err)
	}
}

func records(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// A settled binary's digest is remembered and given without reading the
// file again; any change to the file (a new file renamed over it, a
// rewrite of another size) is hashed anew.
func TestRememberedDigestFollowsTheFile(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "plugin")
	dir := filepath.Join(t.TempDir(), DigestDirName)
	writeBinary(t, bin, bytes.Repeat([]byte("first "), 10000))
	want, err := FileSHA256(bin)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rememberedFileSHA256(bin, dir, anyAge)
	if err != nil || got != want {
		t.Fatalf("first digest %q, %v; want %q", got, err, want)
	}
	recs := records(t, dir)
	if len(recs) != 1 {
		t.Fatalf("records %v, want one", recs)
	}
	// The remembered digest is what is given while the file stays: the
	// record is believed, so a forged one shows it is not read again.
	record := filepath.Join(dir, recs[0])
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Repeat("ab", 32)
	if err := os.WriteFile(record, []byte(strings.Replace(string(b), want, forged, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := rememberedFileSHA256(bin, dir, anyAge); got != forged {
		t.Fatalf("digest %q with the file unchanged, want the remembered %q", got, forged)
	}

	// A rebuilt binary renamed over the path: another inode.
	tmp := bin + ".new"
	writeBinary(t, tmp, bytes.Repeat([]byte("second"), 10000)) // same size
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	want, _ = FileSHA256(bin)
	if got, _ := rememberedFileSHA256(bin, dir, anyAge); got != want {
		t.Fatalf("digest %q after a new binary was renamed over the path, want %q", got, want)
	}
	// Rewritten in place, another size.
	writeBinary(t, bin, bytes.Repeat([]byte("third "), 20000))
	want, _ = FileSHA256(bin)
	if got, _ := rememberedFileSHA256(bin, dir, anyAge); got != want {
		t.Fatalf("digest %q after the binary was rewritten in place, want %q", got, want)
	}
	if got, err := RememberedFileSHA256(bin, ""); err != nil || got != want {
		t.Fatalf("digest %q, %v without a folder, want %q", got, err, want)
	}
}

// A file changed a moment ago is hashed but not remembered: two writes
// within one tick of the kernel's clock may leave the same times.
func TestRememberedDigestWaitsForTheFileToSettle(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "plugin")
	dir := filepath.Join(t.TempDir(), DigestDirName)
	writeBinary(t, bin, []byte("just built"))
	want, _ := FileSHA256(bin)
	if got, err := rememberedFileSHA256(bin, dir, time.Hour); err != nil || got != want {
		t.Fatalf("digest %q, %v; want %q", got, err, want)
	}
	if recs := records(t, dir); len(recs) != 0 {
		t.Fatalf("a file changed within the hour was remembered: %v", recs)
	}
}

// A folder that cannot be written costs the hash, nothing else.
func TestRememberedDigestWithoutAWritableFolder(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "plugin")
	writeBinary(t, bin, []byte("binary"))
	want, _ := FileSHA256(bin)
	notADir := filepath.Join(t.TempDir(), "file")
	writeBinary(t, notADir, nil)
	for range 2 {
		if got, err := rememberedFileSHA256(bin, filepath.Join(notADir, DigestDirName), anyAge); err != nil || got != want {
			t.Fatalf("digest %q, %v; want %q", got, err, want)
		}
	}
	if _, err := RememberedFileSHA256(filepath.Join(t.TempDir(), "missing"), notADir); err == nil {
		t.Fatal("a missing binary gave a digest")
	}
}
