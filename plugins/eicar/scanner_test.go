package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/shared"
)

func scan(t *testing.T, s *Scanner, r io.Reader) shared.Result {
	t.Helper()
	res, err := s.Scan(context.Background(), shared.Artifact{Type: shared.ArtifactFile, Size: -1, Content: r})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestFindsEicarAnywhereAcrossReads(t *testing.T) {
	s := NewScanner("test", hclog.NewNullLogger())
	big := make([]byte, 3*readSize)
	for _, off := range []int{0, 1, readSize - 30, readSize - 1, readSize, 2*readSize + 5, len(big) - len(EICAR)} {
		content := append([]byte(nil), big...)
		copy(content[off:], EICAR)
		for name, r := range map[string]io.Reader{
			"whole":  bytes.NewReader(content),
			"1 byte": iotest.OneByteReader(bytes.NewReader(content)),
			"halves": iotest.HalfReader(bytes.NewReader(content)),
		} {
			if res := scan(t, s, r); res.Verdict != shared.VerdictMalicious || res.MalwareFamily != Family {
				t.Errorf("offset %d, %s reads: %+v; want malicious %s", off, name, res, Family)
			}
		}
	}
	if res := scan(t, s, bytes.NewReader(big)); res.Verdict != shared.VerdictBenign {
		t.Errorf("zeros: %+v; want benign", res)
	}
	if res := scan(t, s, strings.NewReader(EICAR[1:])); res.Verdict != shared.VerdictBenign {
		t.Errorf("EICAR less its first byte: %+v; want benign", res)
	}
}

func TestStrictFollowsTheConvention(t *testing.T) {
	s := NewScanner("test", hclog.NewNullLogger())
	if err := s.Configure(context.Background(), []byte(`{"strict": true}`)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		content string
		want    shared.Verdict
	}{
		{"exact", EICAR, shared.VerdictMalicious},
		{"trailing whitespace", EICAR + "  \r\n\t", shared.VerdictMalicious},
		{"up to 128 bytes", EICAR + strings.Repeat(" ", 128-len(EICAR)), shared.VerdictMalicious},
		{"over 128 bytes", EICAR + strings.Repeat(" ", 129-len(EICAR)), shared.VerdictBenign},
		{"prefix", "x" + EICAR, shared.VerdictBenign},
		{"trailing text", EICAR + "hello", shared.VerdictBenign},
	} {
		if res := scan(t, s, iotest.OneByteReader(strings.NewReader(tc.content))); res.Verdict != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, res.Verdict, tc.want)
		}
	}
}

func TestConfigure(t *testing.T) {
	s := NewScanner("test", hclog.NewNullLogger())
	for _, bad := range []string{`{"strict": "yes"}`, `{"colour": 1}`, `[1]`} {
		var ce *shared.ConfigError
		if err := s.Configure(context.Background(), []byte(bad)); !errors.As(err, &ce) || ce.Error() == "" {
			t.Errorf("Configure(%s) = %v; want a ConfigError", bad, err)
		}
	}
	// A refused config leaves the running one in force.
	if res := scan(t, s, strings.NewReader("junk "+EICAR)); res.Verdict != shared.VerdictMalicious {
		t.Errorf("after refused configs: %s; want the default (anywhere) mode", res.Verdict)
	}
	for range 2 { // idempotent
		if err := s.Configure(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadErrorIsUnknownAndCancelIsAnError(t *testing.T) {
	s := NewScanner("test", hclog.NewNullLogger())
	res := scan(t, s, iotest.ErrReader(errors.New("stream broke")))
	if res.Verdict != shared.VerdictUnknown || !strings.Contains(res.Reason, "stream broke") {
		t.Errorf("read error: %+v; want unknown with the reason", res)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Scan(ctx, shared.Artifact{Type: shared.ArtifactFile, Content: strings.NewReader("x")}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled scan: %v; want context.Canceled", err)
	}
	res, err := s.Scan(context.Background(), shared.Artifact{Type: shared.ArtifactURL, Content: strings.NewReader("http://x/" + EICAR)})
	if err != nil || res.Verdict != shared.VerdictUnknown {
		t.Errorf("url artifact: %+v %v; want unknown (not supported)", res, err)
	}
}
