package marketplace

import (
	"strings"
	"testing"
	"time"
)

const validBody = `{
  "id": 9007199254740993,
  "artifact_type": "FILE",
  "artifact_uri": "https://example.com/a/1",
  "expiration": "2026-03-01T12:00:00.250",
  "response_url": "https://example.com/r/1",
  "phase": "Assertion",
  "sha256": "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
  "mimetype": "application/pdf",
  "metadata": {"filename": "x.pdf", "size": 1234, "hash": {"md5": "abc"}},
  "rules": {"min_allowed_bid": 62500000000000000, "max_allowed_bid": 123456789012345678901234567890},
  "duration": 20,
  "tasked_at": "2026-03-01T11:59:40",
  "community": "pi",
  "new_field_from_the_future": {"a": [1, 2, 3]}
}`

func TestParseBountyValid(t *testing.T) {
	b, err := ParseBounty([]byte(validBody))
	if err != nil {
		t.Fatal(err)
	}
	if b.ID != 9007199254740993 { // past float64's exact range: decoded as an integer
		t.Errorf("id = %d", b.ID)
	}
	if b.ArtifactType != "file" || b.Phase != PhaseAssertion {
		t.Errorf("type %q phase %q", b.ArtifactType, b.Phase)
	}
	want := time.Date(2026, 3, 1, 12, 0, 0, 250e6, time.UTC)
	if !b.Expiration.Equal(want) || b.Expiration.Location() != time.UTC {
		t.Errorf("expiration = %v, want %v (naive = UTC)", b.Expiration, want)
	}
	if b.SHA256 != strings.ToLower("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855") {
		t.Errorf("sha256 = %q", b.SHA256)
	}
	if got := b.Rules.MaxAllowedBid.String(); got != "123456789012345678901234567890" {
		t.Errorf("max bid = %s", got)
	}
	f := b.Fields()
	for k, v := range map[string]string{"mimetype": "application/pdf", "filename": "x.pdf", "size": "1234", "hash.md5": "abc", "metadata.filename": "x.pdf", "artifact_type": "file"} {
		if f[k] != v {
			t.Errorf("field %s = %q, want %q", k, f[k], v)
		}
	}
}

func TestParseTimestamp(t *testing.T) {
	want := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{
		"2026-03-01T12:00:00", "2026-03-01 12:00:00", "2026-03-01T12:00:00Z", "2026-03-01T12:00:00.000000",
		"2026-03-01T13:00:00+01:00", "2026-03-01T07:00:00-0500", "2026-03-01T14:00:00+02", "2026-03-01T12:00:00z",
	} {
		got, err := ParseTimestamp(s)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTimestamp(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "tomorrow", "1767268800", "2026-13-01T00:00:00"} {
		if _, err := ParseTimestamp(s); err == nil {
			t.Errorf("ParseTimestamp(%q) accepted", s)
		}
	}
}

func TestParseBountyRejects(t *testing.T) {
	base := `"artifact_type":"file","artifact_uri":"http://x/a","expiration":"2026-03-01T12:00:00","response_url":"http://x/r"`
	for _, tc := range []struct{ body, want string }{
		{`[1,2]`, "want a JSON object"},
		{`{"id": 1,`, "not valid JSON"},
		{`{` + base + `}`, "id: missing"},
		{`{"id": "12",` + base + `}`, "id: want a JSON integer"},
		{`{"id": 1.5,` + base + `}`, "id: want a JSON integer"},
		{`{"id": 1e3,` + base + `}`, "id: want a JSON integer"},
		{`{"id": 99999999999999999999,` + base + `}`, "does not fit"},
		{`{"id": 1, "artifact_type": 3}`, "artifact_type: wrong type"},
		{`{"id": 1,"artifact_type":"file","artifact_uri":"http://x/a","response_url":"http://x/r"}`, "expiration: missing"},
		{`{"id": 1,"artifact_type":"file","artifact_uri":"http://x/a","expiration":"soon","response_url":"http://x/r"}`, "expiration: not an ISO-8601"},
		{`{"id": 1,"artifact_type":"file","artifact_uri":"ftp://x/a","expiration":"2026-03-01T12:00:00","response_url":"http://x/r"}`, "artifact_uri: want an absolute http(s) URL"},
		{`{"id": 1,"artifact_type":"file","artifact_uri":"http://x/a","expiration":"2026-03-01T12:00:00"}`, "response_url: missing"},
		{`{"id": 1,` + base + `,"phase":"voting"}`, "phase:"},
		{`{"id": 1,` + base + `,"sha256":"abc"}`, "sha256:"},
		{`{"id": 1,` + base + `,"metadata":[1]}`, "metadata: want an object"},
		{`{"id": 1,` + base + `,"rules":{"min_allowed_bid":1.5}}`, "rules.min_allowed_bid: want a JSON integer"},
		{`{"id": 1,` + base + `,"rules":{"min_allowed_bid":"10"}}`, "rules.min_allowed_bid: want a JSON integer"},
		{`{"id": 1,` + base + `,"rules":{"min_allowed_bid":-1}}`, "must not be negative"},
		{`{"id": 1,` + base + `,"rules":{"min_allowed_bid":10,"max_allowed_bid":5}}`, "exceeds max_allowed_bid"},
	} {
		_, err := ParseBounty([]byte(tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseBounty(%s) = %v, want an error containing %q", tc.body, err, tc.want)
		}
	}
}

func TestParseBountyLenient(t *testing.T) {
	// A url bounty's uri is judged, not fetched; an unknown artifact type
	// and a missing phase or rules are still accepted (and answered).
	b, err := ParseBounty([]byte(`{"id":1,"artifact_type":"Url","artifact_uri":"evil.example/path","expiration":"2026-03-01T12:00:00Z","response_url":"http://x/r","tasked_at":"garbage","metadata":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if b.ArtifactType != "url" || b.Phase != PhaseAssertion || b.Rules.MinAllowedBid.Cmp(DefaultRules().MinAllowedBid) != 0 {
		t.Errorf("got %+v", b)
	}
	b, err = ParseBounty([]byte(`{"id":2,"artifact_type":"blob","artifact_uri":"http://x/a","expiration":"2026-03-01T12:00:00Z","response_url":"http://x/r"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Type(); ok {
		t.Error("blob is not a known type")
	}
}
