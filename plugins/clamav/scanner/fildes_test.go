package scanner

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/shared"
)

// byReference is an artifact passed by reference, as the shim hands it
// over: a read-only file, and Content over the same bytes (here counted,
// so a test sees whether the scanner streamed them).
func byReference(t *testing.T, content []byte) (shared.Artifact, *countingReader) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "artifact")
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cr := &countingReader{r: io.NewSectionReader(f, 0, int64(len(content)))}
	return shared.Artifact{ID: "ref", Type: shared.ArtifactFile, Size: int64(len(content)), File: f, Content: cr}, cr
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// An artifact by reference goes to a unix-socket clamd as its descriptor
// (nothing read from Content) and is streamed from Content over TCP; both
// give the same verdicts.
func TestScanByReference(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{TCP: true})
	cases := []struct {
		name    string
		content []byte
		want    shared.Verdict
		family  string
	}{
		{"eicar", EICAR(), shared.VerdictMalicious, EICARFamily},
		{"zipped marker", zipOf(t, "inner.txt", []byte("x "+markerZipped+" y")), shared.VerdictMalicious, familyZipped},
		{"random", randomBytes(300<<10, 5), shared.VerdictBenign, ""},
		{"empty", nil, shared.VerdictBenign, ""},
	}
	for _, addr := range []string{d.Address(), d.TCPAddress()} {
		s := configured(t, addr)
		unix := addr == d.Address()
		// A binary artifact's OK waits for the probes of clamd's limits;
		// until they pass, artifacts are streamed (see attempt).
		if r := scan(t, s, file(randomBytes(4096, 9))); r.Verdict != shared.VerdictBenign {
			t.Fatalf("warm-up at %s: %+v", addr, r)
		}
		for _, tt := range cases {
			a, content := byReference(t, tt.content)
			r := scan(t, s, a)
			if r.Verdict != tt.want || r.MalwareFamily != tt.family || r.BytesScanned != int64(len(tt.content)) {
				t.Fatalf("%s at %s: %+v, want %s %q over %d bytes", tt.name, addr, r, tt.want, tt.family, len(tt.content))
			}
			if unix && content.n != 0 {
				t.Errorf("%s at %s: %d bytes streamed; clamd should have read the file itself", tt.name, addr, content.n)
			}
			if !unix && content.n != int64(len(tt.content)) {
				t.Errorf("%s at %s: %d of %d bytes streamed", tt.name, addr, content.n, len(tt.content))
			}
		}
	}
}

// A file that does not hold the announced size is never benign.
func TestScanByReferenceSizeMismatch(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{})
	s := configured(t, d.Address())
	a, _ := byReference(t, []byte("twelve bytes"))
	a.Size = 20
	r := scan(t, s, a)
	if r.Verdict == shared.VerdictBenign {
		t.Fatalf("%+v: benign for a file shorter than announced", r)
	}
	wantUnknown(t, r, "announced 20")
}
