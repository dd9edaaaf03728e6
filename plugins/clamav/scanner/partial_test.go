package scanner

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/shared"
)

// Evasions by padding: the payload (a shipped marker) sits where a clamd
// with common limits does not look. Each archive is built here, never
// committed. Measured on clamd 1.4.6: with AlertExceedsMax and the default
// MaxFileSize (100M) the padded member answers OK; under Debian's packaged
// limits (MaxFileSize 25M, MaxScanSize 100M, MaxRecursion 16, no alerts)
// the 30 MiB member and the 20-deep nesting answer OK too.
type evasion struct {
	name    string
	content func(t *testing.T) []byte
}

// evasions are the padded and nested archives. The first two are cheap for
// clamd (a 30 MiB member, 20 small zips); the others make it unpack
// 101-120 MiB, seconds of its CPU each, and run with the e2e tag only
// (partial_e2e_test.go).
func evasions() []evasion {
	return []evasion{
		{"the marker 20 zips deep", func(t *testing.T) []byte {
			b := []byte(markerAlpha)
			for i := range 20 {
				b = zipMembers(t, member{name: fmt.Sprintf("level%d", i), tail: string(b)})
			}
			return b
		}},
		{"30 MiB member of zeros, then the marker", func(t *testing.T) []byte {
			return zipMembers(t, member{"padded.bin", 30 << 20, markerAlpha})
		}},
		{"101 MiB member of zeros, then the marker", func(t *testing.T) []byte {
			return zipMembers(t, member{"padded.bin", 101 << 20, markerAlpha})
		}},
		{"two 60 MiB members, the marker in the second", func(t *testing.T) []byte {
			return zipMembers(t, member{"a.bin", 60 << 20, ""}, member{"b.bin", 60 << 20, markerAlpha})
		}},
	}
}

// cheapEvasions are the evasions every `go test` run scans.
func cheapEvasions() []evasion { return evasions()[:2] }

// member is a zip member: zeros bytes of zeros, then tail.
type member struct {
	name  string
	zeros int
	tail  string
}

func zipMembers(t *testing.T, ms ...member) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	pad := make([]byte, 1<<20)
	for _, m := range ms {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: m.name, Method: zip.Deflate})
		if err != nil {
			t.Fatal(err)
		}
		for n := m.zeros; n > 0; n -= len(pad) {
			if _, err := w.Write(pad[:min(n, len(pad))]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := io.WriteString(w, m.tail); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// slowScan allows for clamd unpacking hundreds of MiB on a busy machine.
func slowScan(t *testing.T, s *Scanner, a shared.Artifact) shared.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := s.Scan(ctx, a)
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return r
}

func configuredJSON(t *testing.T, raw string) *Scanner {
	t.Helper()
	s := New(testLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Configure(ctx, []byte(raw)); err != nil {
		t.Fatalf("Configure(%s): %v", raw, err)
	}
	t.Cleanup(func() { closeScanner(s) })
	return s
}

// TestManagedClamdNeverBenignOnPartialScan: the clamd the plugin runs
// alerts on every limit, so a padded or nested payload is malicious (it
// looked) or unknown (it said it stopped), never benign.
func TestManagedClamdNeverBenignOnPartialScan(t *testing.T) {
	testManagedClamdNeverBenign(t, cheapEvasions())
}

func testManagedClamdNeverBenign(t *testing.T, evasions []evasion) {
	s := configuredJSON(t, fmt.Sprintf(`{"database":%q,"timeout":"2m"}`, repoSignatures(t)))
	for _, e := range evasions {
		t.Run(e.name, func(t *testing.T) {
			r := slowScan(t, s, file(e.content(t)))
			switch r.Verdict {
			case shared.VerdictMalicious:
				if r.MalwareFamily != familyAlpha {
					t.Errorf("family %q, want %q", r.MalwareFamily, familyAlpha)
				}
			case shared.VerdictUnknown:
				if r.Metadata[shared.MetaComment] != shared.CommentDecompressionUnsafe {
					t.Errorf("unknown without %s: %+v", shared.CommentDecompressionUnsafe, r)
				}
			default:
				t.Errorf("%+v, want malicious or unknown", r)
			}
			t.Logf("%s: %s %s", r.Verdict, r.MalwareFamily, r.Reason)
		})
	}
	if r := scan(t, s, file(zipOf(t, "clean.txt", []byte("nothing here")))); r.Verdict != shared.VerdictBenign {
		t.Errorf("a small clean zip: %+v, want benign", r)
	}
	h, err := s.Health(context.Background())
	if err != nil || !h.Healthy || !strings.Contains(h.Message, "managed clamd") {
		t.Errorf("Health = %+v, %v", h, err)
	}
}

// debianLimits is clamd.conf as Debian's clamav-daemon package ships it,
// as far as limits and alerts go (it sets no AlertEncrypted* line: they
// are off).
func debianLimits() []string {
	return []string{"MaxFileSize 25M", "MaxScanSize 100M", "MaxRecursion 16", "AlertExceedsMax no", "PCREMaxFileSize 25M",
		"AlertEncrypted no", "AlertEncryptedArchive no", "AlertEncryptedDoc no"}
}

// TestExternalClamdThatSkipsSilently: a clamd configured as Debian ships
// it answers OK for the evasions. The probes find that out: health names
// the clamd.conf lines to fix, archives answer unknown, while plain text
// (which no limit cuts short) stays benign and a match stays malicious.
func TestExternalClamdThatSkipsSilently(t *testing.T) {
	testExternalClamdThatSkipsSilently(t, cheapEvasions())
}

func testExternalClamdThatSkipsSilently(t *testing.T, evasions []evasion) {
	d := devclamd.StartT(t, devclamd.Options{Config: debianLimits()})
	s := configuredJSON(t, fmt.Sprintf(`{"address":%q,"timeout":"2m"}`, d.Address()))

	for _, e := range evasions {
		t.Run(e.name, func(t *testing.T) {
			r := slowScan(t, s, file(e.content(t)))
			if r.Verdict == shared.VerdictBenign {
				t.Fatalf("benign for content this clamd skipped: %+v", r)
			}
			if r.Verdict == shared.VerdictUnknown && r.Metadata[shared.MetaComment] != shared.CommentDecompressionUnsafe {
				t.Errorf("unknown without %s: %+v", shared.CommentDecompressionUnsafe, r)
			}
			t.Logf("%s: %s", r.Verdict, r.Reason)
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := s.Health(ctx)
	if err != nil || h.Healthy || !strings.Contains(h.Message, "AlertExceedsMax yes") || !strings.Contains(h.Message, "MaxFileSize") {
		t.Errorf("Health = %+v, %v; want degraded, naming the clamd.conf lines to fix", h, err)
	}

	if r := scan(t, s, file([]byte("plain text, nothing in it\n"))); r.Verdict != shared.VerdictBenign {
		t.Errorf("plain text: %+v, want benign", r)
	}
	if r := scan(t, s, file(zipOf(t, "clean.txt", []byte("nothing here")))); r.Verdict != shared.VerdictUnknown {
		t.Errorf("a zip: %+v, want unknown from a clamd that skips silently", r)
	}
	for _, text := range []string{"MIME-Version: 1.0\nContent-Type: multipart/mixed\n", "begin 644 x.zip\nM\n", "%PDF-1.7\n"} {
		if r := scan(t, s, file([]byte(text))); r.Verdict != shared.VerdictUnknown {
			t.Errorf("text clamd unpacks (%q): %+v, want unknown", text, r)
		}
	}
	if r := scan(t, s, file(EICAR())); r.Verdict != shared.VerdictMalicious {
		t.Errorf("EICAR: %+v", r)
	}
	// By reference (an open file, as the host passes them): the same.
	plain, _ := byReference(t, []byte("plain text, nothing in it\n"))
	if r := scan(t, s, plain); r.Verdict != shared.VerdictBenign {
		t.Errorf("plain text by reference: %+v, want benign", r)
	}
	zipped, _ := byReference(t, zipOf(t, "clean.txt", []byte("nothing here")))
	if r := scan(t, s, zipped); r.Verdict != shared.VerdictUnknown {
		t.Errorf("a zip by reference: %+v, want unknown", r)
	}
}

// TestPlainTextByReferenceBeforeTheProbes: an artifact by reference goes
// to clamd by FILDES while the probes have not settled; when they then
// find a clamd that skips silently, plain text is still benign (the
// plugin reads the file itself) and an archive is not.
func TestPlainTextByReferenceBeforeTheProbes(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{Config: debianLimits()})
	s := configuredJSON(t, fmt.Sprintf(`{"address":%q,"timeout":"2m"}`, d.Address()))
	if tr := s.current.Load().backends[0].currentTrust(); tr.state != trustPending {
		t.Fatalf("trust before any scan: %+v, want pending", tr)
	}
	plain, _ := byReference(t, []byte("plain text, nothing in it\n"))
	if r := slowScan(t, s, plain); r.Verdict != shared.VerdictBenign {
		t.Errorf("plain text by reference: %+v, want benign", r)
	}
	zipped, _ := byReference(t, zipOf(t, "clean.txt", []byte("nothing here")))
	if r := slowScan(t, s, zipped); r.Verdict != shared.VerdictUnknown {
		t.Errorf("a zip by reference: %+v, want unknown", r)
	}
}

// closeScanner stops a scanner's background work and waits for its managed
// clamd, if any, to be gone.
func closeScanner(s *Scanner) { s.Close() }

// TestExternalClamdThatSkipsPastTheProbes: clamds that pass shallow probes
// and still answer OK for content they skipped. Measured on clamd 1.4.6:
// with AlertExceedsMax off and MaxRecursion 40, the marker 40 zips deep
// answered OK while the EICAR file 20 deep was found; with every limit
// alerting but AlertEncryptedArchive off, an encrypted zip answered OK.
// Both were benign.
func TestExternalClamdThatSkipsPastTheProbes(t *testing.T) {
	for _, c := range []struct {
		name    string
		config  []string
		content func(t *testing.T) []byte
		fix     string
	}{
		{"MaxRecursion 40 without alerts", []string{"AlertExceedsMax no", "MaxRecursion 40"}, func(t *testing.T) []byte {
			b := []byte(markerAlpha)
			for i := range 40 {
				b = zipMembers(t, member{name: fmt.Sprintf("level%d", i), tail: string(b)})
			}
			return b
		}, "AlertExceedsMax yes"},
		{"encrypted archives without alerts", []string{"AlertEncrypted no", "AlertEncryptedArchive no", "AlertEncryptedDoc no"}, func(t *testing.T) []byte {
			return encryptedZip(t, []byte(markerAlpha))
		}, "AlertEncryptedArchive yes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := devclamd.StartT(t, devclamd.Options{Config: c.config})
			s := configuredJSON(t, fmt.Sprintf(`{"address":%q,"timeout":"2m"}`, d.Address()))
			r := slowScan(t, s, file(c.content(t)))
			if r.Verdict == shared.VerdictBenign {
				t.Fatalf("benign for content this clamd skipped: %+v", r)
			}
			t.Logf("%s: %s", r.Verdict, r.Reason)
			// An OK waits for the probes; a match does not.
			slowScan(t, s, file(zipOf(t, "clean.txt", []byte("nothing here"))))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if h, err := s.Health(ctx); err != nil || h.Healthy || !strings.Contains(h.Message, c.fix) {
				t.Errorf("Health = %+v, %v; want degraded, naming %q", h, err, c.fix)
			}
		})
	}
}

// encryptedZip is a zip whose one member is flagged encrypted (what clamd
// goes by): 12 bytes standing for the encryption header, then content
// scrambled as a cipher would (no signature matches it in the raw zip).
func encryptedZip(t *testing.T, content []byte) []byte {
	t.Helper()
	scrambled := make([]byte, len(content))
	for i, c := range content {
		scrambled[i] = c ^ 0x5a
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "secret.bin", Method: zip.Store, Flags: 0x1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(append(make([]byte, 12), scrambled...)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestFirstHealthNamesTheFix: the first health check of a clamd that skips
// silently names the clamd.conf lines to fix. `microengine plugins` with
// no engine running launches the plugin and asks Health once: it said
// "healthy, checking whether it skips content silently" for Debian's
// limits, though the probes that find them out take milliseconds.
func TestFirstHealthNamesTheFix(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{Config: debianLimits()})
	s := configuredJSON(t, fmt.Sprintf(`{"address":%q,"timeout":"2m"}`, d.Address()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // the host's deadline
	defer cancel()
	h, err := s.Health(ctx)
	if err != nil || h.Healthy || !strings.Contains(h.Message, "AlertExceedsMax yes") || !strings.Contains(h.Message, "AlertEncryptedArchive yes") {
		t.Errorf("Health = %+v, %v; want degraded, naming the clamd.conf lines to fix", h, err)
	}
}

// TestHealthOfADownClamdRunsNoProbes: a clamd that does not answer is not
// probed (the probes would fail, and a one-shot `microengine scan` logged a
// second warning for the same outage: "could not check whether clamd
// answers OK... cannot connect"). It is probed when it answers.
func TestHealthOfADownClamdRunsNoProbes(t *testing.T) {
	s := configuredJSON(t, fmt.Sprintf(`{"address":%q}`, "unix://"+t.TempDir()+"/clamd.sock"))
	if h, err := s.Health(context.Background()); err != nil || h.Healthy {
		t.Fatalf("Health = %+v, %v; want unhealthy", h, err)
	}
	b := s.current.Load().backends[0]
	b.mu.Lock()
	tr, probing := b.trust, b.probing
	b.mu.Unlock()
	if tr.state != trustPending || probing {
		t.Errorf("trust %+v, probing %v: want pending, no probes", tr, probing)
	}
}

// syncBuffer is a log sink read while the scanner's goroutines write it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStoppedManagedClamdWarning: a managed clamd that stops answering is
// said to be the managed one, without the advice for an address ("Start
// it, fix address, or set database"), which is already set.
func TestStoppedManagedClamdWarning(t *testing.T) {
	var out syncBuffer
	s := New(hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: &out}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Configure(ctx, []byte(fmt.Sprintf(`{"database":%q}`, repoSignatures(t)))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	st := s.current.Load()
	pid := st.daemon.Status().Pid
	s.checkAll(ctx, st, 5*time.Second) // up
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	s.checkAll(ctx, st, 200*time.Millisecond)
	log := out.String()
	if !strings.Contains(log, "managed clamd does not answer") || strings.Contains(log, "fix address") {
		t.Errorf("log:\n%s\nwant the managed clamd named, no advice on address", log)
	}
}
