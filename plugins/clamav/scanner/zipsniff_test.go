package scanner

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/microengine/microengine/shared"
)

// localSize rewrites the compressed size in the local header of a zip's
// first member, and clears its data descriptor flag (Go's writer sets it;
// clamd then goes by the central directory).
func localSize(t *testing.T, z []byte, size uint32) []byte {
	t.Helper()
	z = bytes.Clone(z)
	i := bytes.Index(z, zipLocalSig)
	if i < 0 {
		t.Fatal("no local header")
	}
	binary.LittleEndian.PutUint16(z[i+6:], binary.LittleEndian.Uint16(z[i+6:])&^zipFlagDescriptor)
	binary.LittleEndian.PutUint32(z[i+18:], size)
	return z
}

// storedZip is a zip of one member with its sizes in the local header and
// no data descriptor, as Python's zipfile and Info-ZIP write them.
func storedZip(t *testing.T, content []byte) []byte {
	t.Helper()
	z := zipOf(t, "m.txt", content)
	// Put the central directory's compressed size in the local header.
	c := bytes.Index(z, zipCentralSig)
	if c < 0 {
		t.Fatal("no central directory")
	}
	return localSize(t, z, binary.LittleEndian.Uint32(z[c+20:]))
}

// TestZipMemberClamdSkips: clamd sizes a member by its local header; one
// whose local header disagrees with the central directory (a zip64 local
// header, or a forged size) is skipped with an OK, while other unzippers
// extract it. Measured on clamd 1.4.6 with the marker: OK, answered benign
// by the managed clamd.
func TestZipMemberClamdSkips(t *testing.T) {
	s := configuredJSON(t, fmt.Sprintf(`{"database":%q,"timeout":"2m"}`, repoSignatures(t)))
	marked := storedZip(t, []byte(markerAlpha))
	if r := scan(t, s, file(marked)); r.Verdict != shared.VerdictMalicious {
		t.Fatalf("the zip as written: %+v, want malicious", r)
	}
	for _, size := range []uint32{zipSizeZip64, 5, 100000} {
		z := localSize(t, marked, size)
		for _, a := range []struct {
			how string
			a   shared.Artifact
		}{{"streamed", file(z)}, {"by reference", func() shared.Artifact { a, _ := byReference(t, z); return a }()}} {
			r := scan(t, s, a.a)
			if r.Verdict == shared.VerdictBenign {
				t.Errorf("local size %#x, %s: benign for a member clamd skipped: %+v", size, a.how, r)
			} else if r.Verdict == shared.VerdictUnknown && r.Metadata[shared.MetaComment] != shared.CommentDecompressionUnsafe {
				t.Errorf("local size %#x, %s: unknown without %s: %+v", size, a.how, shared.CommentDecompressionUnsafe, r)
			}
		}
	}
	if r := scan(t, s, file(storedZip(t, []byte("nothing here")))); r.Verdict != shared.VerdictBenign {
		t.Errorf("a clean zip: %+v, want benign", r)
	}
	// Past zipReadWhole a file by reference is checked beside clamd's
	// scan (readAhead), in zipReadChunk reads.
	// Its member holds no marker: clamd answers OK whether or not it
	// skips it, and only the check tells.
	pad := noise(zipReadChunk + zipReadWhole)
	large := storedZip(t, pad)
	if int64(len(large)) <= zipReadChunk {
		t.Fatalf("the large zip is %d bytes, want more than %d", len(large), zipReadChunk)
	}
	for _, size := range []uint32{zipSizeZip64, 5} {
		a, _ := byReference(t, localSize(t, large, size))
		if r := scan(t, s, a); r.Verdict != shared.VerdictUnknown || r.Metadata[shared.MetaComment] != shared.CommentDecompressionUnsafe {
			t.Errorf("local size %#x, %d bytes by reference: %+v, want unknown, %s", size, len(large), r, shared.CommentDecompressionUnsafe)
		}
	}
	a, _ := byReference(t, large)
	if r := scan(t, s, a); r.Verdict != shared.VerdictBenign {
		t.Errorf("a clean zip of %d bytes by reference: %+v, want benign", a.Size, r)
	}
}

// noise is n bytes that do not deflate.
func noise(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

// TestFileZipSkipped: the read back of a file by reference, whole or in
// chunks, finds a forged member wherever its headers fall, and a file
// shorter than announced is not taken as checked.
func TestFileZipSkipped(t *testing.T) {
	ctx := context.Background()
	clean := storedZip(t, []byte("nothing here"))
	for _, c := range []struct {
		name    string
		content []byte
		skipped bool
	}{
		{"clean, small", clean, false},
		{"forged, small", localSize(t, clean, zipSizeZip64), true},
		{"clean, 1.5 MiB", storedZip(t, noise(3<<19)), false},
		{"forged, 1.5 MiB", localSize(t, storedZip(t, noise(3<<19)), zipSizeZip64), true},
	} {
		a, _ := byReference(t, c.content)
		if got := fileZipSkipped(ctx, a) != ""; got != c.skipped {
			t.Errorf("%s: skipped %v (%q), want %v", c.name, got, fileZipSkipped(ctx, a), c.skipped)
		}
		a.Size++
		if fileZipSkipped(ctx, a) == "" {
			t.Errorf("%s: a file one byte shorter than announced passed the check", c.name)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	a, _ := byReference(t, clean)
	if fileZipSkipped(cancelled, a) == "" {
		t.Error("a check cut short by its context passed")
	}
}

// TestZipSnifferAcrossReads: headers cut by the ends of reads are seen.
func TestZipSnifferAcrossReads(t *testing.T) {
	clean := storedZip(t, []byte("nothing here"))
	forged := localSize(t, clean, zipSizeZip64)
	// A member of 1 MiB of "PK" (not a header) between the local header
	// and the central directory.
	large := localSize(t, storedZip(t, bytes.Repeat([]byte("PK"), 1<<19)), zipSizeZip64)
	for _, c := range []struct {
		name    string
		content []byte
		skipped bool
	}{
		{"clean", clean, false},
		{"forged", forged, true},
		{"forged, 1 MiB member", large, true},
	} {
		z := newZipSniffer(iotest.OneByteReader(bytes.NewReader(c.content)))
		if _, err := io.Copy(io.Discard, z); err != nil {
			t.Fatal(err)
		}
		if got := z.skipped() != ""; got != c.skipped {
			t.Errorf("%s: skipped %v (%q), want %v", c.name, got, z.skipped(), c.skipped)
		}
	}
}

// TestNestedZip64ClamdSkips: a zip with a zip64 local header, deflated
// inside another zip, is out of the sniffer's sight (it reads the
// artifact's own headers). The managed clamd loads a signature of such
// headers beside the operator's database, so it says so wherever it
// unpacks one. Measured: OK, benign from the managed clamd.
func TestNestedZip64ClamdSkips(t *testing.T) {
	s := configuredJSON(t, fmt.Sprintf(`{"database":%q,"timeout":"2m"}`, repoSignatures(t)))
	inner := localSize(t, storedZip(t, []byte(markerAlpha)), zipSizeZip64)
	outer := zipOf(t, "inner.zip", inner)
	if r := scan(t, s, file(outer)); r.Verdict != shared.VerdictUnknown || r.Metadata[shared.MetaComment] != shared.CommentDecompressionUnsafe {
		t.Errorf("zip64 local header nested: %+v, want unknown, %s", r, shared.CommentDecompressionUnsafe)
	}
	if r := scan(t, s, file(zipOf(t, "inner.zip", storedZip(t, []byte("nothing here"))))); r.Verdict != shared.VerdictBenign {
		t.Errorf("a clean nested zip: %+v, want benign", r)
	}
}

// TestZipSnifferHeaderCap: content that is nothing but local header
// signatures is not recorded without end; past the cap the artifact is
// reported unchecked, so an OK on it is not benign. Fewer of them, with
// no central directory, name no skipped member.
func TestZipSnifferHeaderCap(t *testing.T) {
	for _, tc := range []struct {
		n         int
		unchecked bool
	}{{zipHeadersMax - 100, false}, {zipHeadersMax + 100, true}} {
		z := newZipSniffer(bytes.NewReader(append(bytes.Repeat(zipLocalSig, tc.n), make([]byte, zipCentralLen)...)))
		if _, err := io.Copy(io.Discard, iotest.HalfReader(z)); err != nil {
			t.Fatal(err)
		}
		if len(z.locals)+len(z.centrals) > zipHeadersMax {
			t.Errorf("%d signatures: %d headers recorded, more than %d", tc.n, len(z.locals)+len(z.centrals), zipHeadersMax)
		}
		if why := z.skipped(); (why != "") != tc.unchecked {
			t.Errorf("%d signatures: skipped() = %q, want unchecked=%v", tc.n, why, tc.unchecked)
		}
	}
}
