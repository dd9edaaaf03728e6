package clamd

import (
	"archive/zip"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/microengine/microengine/internal/devclamd"
)

// Test content. The EICAR string and the markers are assembled at run time
// so that this file itself matches none of the shipped signatures.
func eicar() []byte {
	return []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
}

const markerPrefix = "MICROENGINE-TEST-"

const (
	markerAlpha  = markerPrefix + "MARKER-ALPHA"
	markerBravo  = markerPrefix + "MARKER-BRAVO"
	markerZipped = markerPrefix + "MARKER-ZIPPED"
)

func zipOf(t *testing.T, name string, content []byte, method uint16) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestAgainstRealClamd runs the client against a private clamd with the
// shipped signatures and a 1 MiB StreamMaxLength.
func TestAgainstRealClamd(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{StreamMaxLength: 1 << 20, TCP: true})
	c := newTestClient(t, d.Address(), Options{})
	ctx := testContext(t)

	t.Run("PING", func(t *testing.T) {
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("VERSION without an official database", func(t *testing.T) {
		v, err := c.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v.Product != "ClamAV" || v.Engine == "" || v.Database != "" {
			t.Errorf("Version = %+v, want ClamAV, an engine version and no database version", v)
		}
	})
	t.Run("STATS", func(t *testing.T) {
		st, err := c.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.ThreadsMax == 0 || st.State == "" {
			t.Errorf("Stats = %+v", st)
		}
	})

	filler := randomBytes(700<<10, 42)
	straddling := append(append(bytes.Clone(filler[:DefaultChunkSize-10]), markerAlpha...), filler[:1000]...)
	found := []struct {
		name    string
		content []byte
		want    string
	}{
		{"EICAR", eicar(), "Win.Test.EICAR_HDB-1.UNOFFICIAL"},
		{"marker alpha", []byte("some text " + markerAlpha + " more text"), "MicroEngine.Test.Marker.Alpha.UNOFFICIAL"},
		{"marker bravo", []byte(markerBravo), "MicroEngine.Test.Marker.Bravo.UNOFFICIAL"},
		{"marker across a chunk boundary", straddling, "MicroEngine.Test.Marker.Alpha.UNOFFICIAL"},
		{"zipped marker (deflated)", zipOf(t, "inner.txt", []byte("x "+markerZipped+" y"), zip.Deflate), "MicroEngine.Test.Marker.Zipped.UNOFFICIAL"},
		{"zipped marker (stored)", zipOf(t, "inner.txt", []byte("x "+markerZipped+" y"), zip.Store), "MicroEngine.Test.Marker.Zipped.UNOFFICIAL"},
		{"EICAR in a zip", zipOf(t, "eicar.com", eicar(), zip.Deflate), "Win.Test.EICAR_HDB-1.UNOFFICIAL"},
	}
	for _, tt := range found {
		t.Run(tt.name, func(t *testing.T) {
			for _, readSize := range []int{1, 3, 1 << 20} {
				reply, err := c.Instream(ctx, &chunkedReader{r: bytes.NewReader(tt.content), n: readSize})
				if err != nil {
					t.Fatalf("read size %d: %v", readSize, err)
				}
				if reply.Status != StatusFound || reply.Signature != tt.want {
					t.Errorf("read size %d: reply %+v, want %s FOUND", readSize, reply, tt.want)
				}
			}
		})
	}

	clean := []struct {
		name    string
		content []byte
	}{
		{"empty", nil},
		{"text", []byte("nothing to see here\n")},
		{"random", filler},
		// The zip-only signature must not match the bare marker: proof
		// that clamd looked inside the archive for the cases above.
		{"bare zip-only marker", []byte("x " + markerZipped + " y")},
		{"EICAR with one byte more", append(eicar(), '\n')},
		{"zip of clean text", zipOf(t, "a.txt", []byte("hello"), zip.Deflate)},
	}
	for _, tt := range clean {
		t.Run(tt.name, func(t *testing.T) {
			reply, err := c.Instream(ctx, bytes.NewReader(tt.content))
			if err != nil || reply.Status != StatusOK || reply.ContentBytes != int64(len(tt.content)) {
				t.Errorf("reply %+v, err %v; want OK for %d bytes", reply, err, len(tt.content))
			}
		})
	}

	t.Run("over clamd's StreamMaxLength", func(t *testing.T) {
		// The client's own cap is off: clamd's 1 MiB must stop it, and the
		// answer must be read although the writes fail.
		for _, size := range []int{1<<20 + 1, 8 << 20, 64 << 20} {
			reply, err := c.Instream(ctx, io.LimitReader(zeroReader{}, int64(size)))
			if !errors.Is(err, ErrSizeLimit) || reply.Status != 0 {
				t.Errorf("%d bytes: reply %+v, err %v; want ErrSizeLimit", size, reply, err)
			}
		}
		// And clamd is still fine afterwards.
		if reply, err := c.Instream(ctx, bytes.NewReader(eicar())); err != nil || reply.Status != StatusFound {
			t.Errorf("after the refusals: reply %+v, err %v", reply, err)
		}
	})

	t.Run("TCP", func(t *testing.T) {
		tc := newTestClient(t, d.TCPAddress(), Options{})
		if err := tc.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		reply, err := tc.Instream(ctx, bytes.NewReader(eicar()))
		if err != nil || reply.Signature != "Win.Test.EICAR_HDB-1.UNOFFICIAL" {
			t.Errorf("reply %+v, err %v", reply, err)
		}
		// Over TCP a reset can discard the reply; either way it is an
		// error, never OK.
		if reply, err := tc.Instream(ctx, io.LimitReader(zeroReader{}, 8<<20)); err == nil {
			t.Errorf("8 MiB over a 1 MiB StreamMaxLength over TCP: reply %+v, want an error", reply)
		}
	})
}
