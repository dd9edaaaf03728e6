package clamd

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseReply(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    Reply
		wantErr error
	}{
		{name: "ok", raw: "stream: OK\x00", want: Reply{Status: StatusOK, Raw: "stream: OK"}},
		{name: "found", raw: "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\x00",
			want: Reply{Status: StatusFound, Signature: "Win.Test.EICAR_HDB-1.UNOFFICIAL", Raw: "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND"}},
		{name: "found with extended detection info", raw: "stream: Win.Test.EICAR_HDB-1(44d88612fea8a8f36de82e1278abb02f:68) FOUND\x00",
			want: Reply{Status: StatusFound, Signature: "Win.Test.EICAR_HDB-1", Detail: "44d88612fea8a8f36de82e1278abb02f:68",
				Raw: "stream: Win.Test.EICAR_HDB-1(44d88612fea8a8f36de82e1278abb02f:68) FOUND"}},
		{name: "parenthesis that is not a detail stays in the name", raw: "stream: Odd.Name(x) FOUND\x00",
			want: Reply{Status: StatusFound, Signature: "Odd.Name(x)", Raw: "stream: Odd.Name(x) FOUND"}},
		{name: "limits exceeded is a FOUND like any other", raw: "stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\x00",
			want: Reply{Status: StatusFound, Signature: "Heuristics.Limits.Exceeded.MaxFileSize", Raw: "stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND"}},

		{name: "size limit", raw: "INSTREAM size limit exceeded. ERROR\x00", wantErr: ErrSizeLimit},
		{name: "size limit unterminated", raw: "INSTREAM size limit exceeded. ERROR", wantErr: ErrSizeLimit},
		{name: "command read timeout (newline)", raw: "COMMAND READ TIMED OUT\n", wantErr: ErrCommandTimeout},
		{name: "command read timeout (NUL)", raw: "COMMAND READ TIMED OUT\x00", wantErr: ErrCommandTimeout},
		{name: "scan error", raw: "stream: Can't allocate memory ERROR\x00", wantErr: ErrScan},
		{name: "scan error without message", raw: "stream:  ERROR\x00", wantErr: ErrScan},

		{name: "empty", raw: "", wantErr: ErrNoReply},
		{name: "only NUL", raw: "\x00", wantErr: ErrProtocol},
		{name: "ok unterminated (truncated)", raw: "stream: OK", wantErr: ErrProtocol},
		{name: "ok newline-framed", raw: "stream: OK\n", wantErr: ErrProtocol},
		{name: "found unterminated", raw: "stream: Eicar FOUND", wantErr: ErrProtocol},
		{name: "short", raw: "stream: O\x00", wantErr: ErrProtocol},
		{name: "ok with trailing text", raw: "stream: OKAY\x00", wantErr: ErrProtocol},
		{name: "ok lowercase", raw: "stream: ok\x00", wantErr: ErrProtocol},
		{name: "ok with blank", raw: "stream: OK \x00", wantErr: ErrProtocol},
		{name: "ok with leading blank", raw: "stream:  OK\x00", wantErr: ErrProtocol},
		{name: "session-tagged ok", raw: "1: stream: OK\x00", wantErr: ErrProtocol},
		{name: "file path instead of stream", raw: "/tmp/x: OK\x00", wantErr: ErrProtocol},
		{name: "two replies", raw: "stream: OK\x00stream: Evil FOUND\x00", wantErr: ErrProtocol},
		{name: "two lines", raw: "stream: Evil FOUND\nstream: OK\x00", wantErr: ErrProtocol},
		{name: "found without a name", raw: "stream: FOUND\x00", wantErr: ErrProtocol},
		{name: "found with blank name", raw: "stream:  FOUND\x00", wantErr: ErrProtocol},
		{name: "found with blanks in name", raw: "stream: Evil Name FOUND\x00", wantErr: ErrProtocol},
		{name: "found with control byte", raw: "stream: Ev\x01il FOUND\x00", wantErr: ErrProtocol},
		{name: "found with non-ASCII", raw: "stream: Évil FOUND\x00", wantErr: ErrProtocol},
		{name: "found with overlong name", raw: "stream: " + strings.Repeat("A", maxSignatureLen+1) + " FOUND\x00", wantErr: ErrProtocol},
		{name: "unknown command", raw: "UNKNOWN COMMAND\x00", wantErr: ErrProtocol},
		{name: "PONG", raw: "PONG\x00", wantErr: ErrProtocol},
		{name: "garbage", raw: "\xff\xfe\x00", wantErr: ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseReply([]byte(tt.raw))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseReply(%q) error = %v, want %v", tt.raw, err, tt.wantErr)
				}
				if got != (Reply{}) {
					t.Errorf("ParseReply(%q) returned %+v with its error", tt.raw, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseReply(%q): %v", tt.raw, err)
			}
			if got != tt.want {
				t.Errorf("ParseReply(%q) = %+v, want %+v", tt.raw, got, tt.want)
			}
		})
	}
}

// FuzzParseReply checks that no input parses as a verdict unless it is one:
// OK only from the exact NUL-terminated "stream: OK", FOUND only with a
// clean signature name, and never a verdict together with an error.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{
		"stream: OK\x00", "stream: OK", "stream: Eicar FOUND\x00", "stream: x(ab:1) FOUND\x00",
		"stream: Heuristics.Limits.Exceeded.MaxScanSize FOUND\x00", "INSTREAM size limit exceeded. ERROR\x00",
		"COMMAND READ TIMED OUT\n", "stream: Can't allocate memory ERROR\x00", "", "\x00",
		"stream: OK\x00stream: A FOUND\x00", "1: stream: OK\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := ParseReply(raw)
		if err != nil {
			if r != (Reply{}) {
				t.Fatalf("ParseReply(%q) returned %+v and error %v", raw, r, err)
			}
			return
		}
		switch r.Status {
		case StatusOK:
			if string(raw) != "stream: OK\x00" {
				t.Fatalf("ParseReply(%q) = OK", raw)
			}
		case StatusFound:
			if raw[len(raw)-1] != 0 || bytes.Count(raw, []byte{0}) != 1 {
				t.Fatalf("ParseReply(%q) = FOUND for a reply that is not one NUL-terminated line", raw)
			}
			if r.Signature == "" || strings.ContainsAny(r.Signature, " \t\n\x00") || !utf8.ValidString(r.Signature) {
				t.Fatalf("ParseReply(%q) = FOUND with signature %q", raw, r.Signature)
			}
			full := r.Signature
			if r.Detail != "" {
				full += "(" + r.Detail + ")"
			}
			if want := "stream: " + full + " FOUND\x00"; string(raw) != want {
				t.Fatalf("ParseReply(%q) = %+v, which re-renders as %q", raw, r, want)
			}
		default:
			t.Fatalf("ParseReply(%q) = status %v without an error", raw, r.Status)
		}
	})
}

func TestParseVersion(t *testing.T) {
	tests := []struct {
		raw  string
		want Version
	}{
		{"ClamAV 1.4.6/27832/Tue Nov 24 09:00:00 2026", Version{
			Product: "ClamAV", Engine: "1.4.6", Database: "27832",
			DatabaseTime: time.Date(2026, time.November, 24, 9, 0, 0, 0, time.UTC),
			Raw:          "ClamAV 1.4.6/27832/Tue Nov 24 09:00:00 2026"}},
		{"ClamAV 1.4.6/27832/Tue Nov  3 09:00:00 2026\x00", Version{
			Product: "ClamAV", Engine: "1.4.6", Database: "27832",
			DatabaseTime: time.Date(2026, time.November, 3, 9, 0, 0, 0, time.UTC),
			Raw:          "ClamAV 1.4.6/27832/Tue Nov  3 09:00:00 2026"}},
		{"ClamAV 1.4.6", Version{Product: "ClamAV", Engine: "1.4.6", Raw: "ClamAV 1.4.6"}},
		{"ClamAV 1.4.6/27832/not a date", Version{Product: "ClamAV", Engine: "1.4.6", Database: "27832", Raw: "ClamAV 1.4.6/27832/not a date"}},
	}
	for _, tt := range tests {
		got, err := ParseVersion(tt.raw)
		if err != nil {
			t.Errorf("ParseVersion(%q): %v", tt.raw, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseVersion(%q) = %+v, want %+v", tt.raw, got, tt.want)
		}
	}
	for _, bad := range []string{"", "ClamAV", "PONG", "ClamAV 1.4.6/daily/x", "ClamAV 1.4 .6"} {
		if _, err := ParseVersion(bad); !errors.Is(err, ErrProtocol) {
			t.Errorf("ParseVersion(%q) error = %v, want ErrProtocol", bad, err)
		}
	}
}

func TestParseStats(t *testing.T) {
	raw := "POOLS: 1\n\nSTATE: VALID PRIMARY\nTHREADS: live 2  idle 1 max 10 idle-timeout 30\nQUEUE: 3 items\n\tSTATS 0.000003 \n\n" +
		"MEMSTATS: heap N/A mmap N/A used N/A free N/A releasable N/A pools 1 pools_used 5.901M pools_total 5.984M\nEND"
	st, err := ParseStats(raw)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "VALID PRIMARY" || st.ThreadsLive != 2 || st.ThreadsIdle != 1 || st.ThreadsMax != 10 || st.QueueItems != 3 {
		t.Errorf("ParseStats = %+v", st)
	}
	if _, err := ParseStats("POOLS: 1\nTHREADS: live 1"); !errors.Is(err, ErrProtocol) {
		t.Errorf("a report without END: error = %v, want ErrProtocol", err)
	}
}

func TestParseAddress(t *testing.T) {
	good := map[string]Address{
		"unix:///run/clamav/clamd.ctl": {"unix", "/run/clamav/clamd.ctl"},
		"/run/clamav/clamd.ctl":        {"unix", "/run/clamav/clamd.ctl"},
		"tcp://127.0.0.1:3310":         {"tcp", "127.0.0.1:3310"},
		"tcp://clamd.internal:3310":    {"tcp", "clamd.internal:3310"},
		"tcp://[::1]:3310":             {"tcp", "[::1]:3310"},
		" unix:///x.sock ":             {"unix", "/x.sock"},
	}
	for in, want := range good {
		got, err := ParseAddress(in)
		if err != nil || got != want {
			t.Errorf("ParseAddress(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if again, err := ParseAddress(got.String()); err != nil || again != got {
			t.Errorf("ParseAddress(%q.String()) = %+v, %v; want a round trip", in, again, err)
		}
	}
	for _, bad := range []string{"", "clamd.sock", "unix://relative/x.sock", "unix:", "tcp://127.0.0.1", "tcp://:3310",
		"tcp://host:3310/path", "http://host:3310", "127.0.0.1:3310", "unix:///x.sock?q=1"} {
		if got, err := ParseAddress(bad); err == nil {
			t.Errorf("ParseAddress(%q) = %+v, want an error", bad, got)
		}
	}
}
