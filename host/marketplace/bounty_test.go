package marketplace

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
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
		{`{"id": "",` + base + `}`, "id: empty"},
		{`{"id": 1.5,` + base + `}`, "id: want an integer or a string"},
		{`{"id": 1e3,` + base + `}`, "id: want an integer or a string"},
		{`{"id": true,` + base + `}`, "id: want an integer or a string"},
		{`{"id": "` + strings.Repeat("u", 129) + `",` + base + `}`, "id: 129 characters"},
		{`{"id": 1, "artifact_type": 3}`, "artifact_type: wrong type"},
		{`{"id": 1,"artifact_type":"file","artifact_uri":"http://x/a","expiration":"soon","response_url":"http://x/r"}`, "expiration: not an ISO-8601"},
		{`{"id": 1,"artifact_type":"file","expiration":"2026-03-01T12:00:00","response_url":"http://x/r"}`, "artifact_uri: missing"},
		{`{"id": 1,"artifact_type":"file","artifact_uri":"http://x/a","expiration":"2026-03-01T12:00:00"}`, "response_url: missing"},
		{`{"id": 1,` + base + `,"rules":[1]}`, "rules: want an object"},
		{`{"id": 1,` + base + `,"metadata":"x"}`, "metadata: want an object"},
		{`{"id": 1,` + base + `,"metadata":{"a":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}}`, "metadata: nested deeper than 16"},
		{`{"id": 1,` + base + `,"metadata":{"a":"` + strings.Repeat("x", MaxMetadataSize) + `"}}`, "metadata: 32776 bytes, over the limit of 32768"},
		{`{"id": 1,` + base + `,"rules":{"min_allowed_bid":1.5}}`, "rules.min_allowed_bid: 1.5 is not a whole number of wei"},
		{`{"id": 1,` + base + `,"rules":{"min_allowed_bid":"6.25e-1"}}`, "is not a whole number of wei"},
		{`{"id": 1,` + base + `,"rules":{"min_allowed_bid":1e999999}}`, "exponent out of range"},
		{`{"id": 1,` + base + `,"rules":{"min_allowed_bid":"ten"}}`, "rules.min_allowed_bid: want a number of wei"},
		{`{"id": 1,` + base + `,"rules":{"min_allowed_bid":"1/2"}}`, "rules.min_allowed_bid: want a number of wei"},
		{`{"id": 1,` + base + `,"rules":{"min_allowed_bid":-1}}`, "must not be negative"},
		{`{"id": 1,` + base + `,"rules":{"min_allowed_bid":true}}`, "rules.min_allowed_bid: want a number of wei"},
	} {
		_, err := ParseBounty([]byte(tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseBounty(%s) = %v, want an error containing %q", truncate(tc.body, 300), err, tc.want)
		}
	}
}

func TestParseBountyNamesEveryFault(t *testing.T) {
	_, err := ParseBounty([]byte(`{"id": 1.5, "artifact_type": "file", "expiration": "soon", "response_url": "x", "rules": {"max_allowed_bid": -3}}`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, field := range []string{"id:", "artifact_uri:", "expiration:", "response_url:", "rules.max_allowed_bid:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
}

func TestParseBountyLenient(t *testing.T) {
	// An unknown artifact type and a missing phase or rules are still
	// accepted (and answered).
	b, err := ParseBounty([]byte(`{"id":1,"artifact_type":"Url","artifact_uri":"http://x/u","expiration":"2026-03-01T12:00:00Z","response_url":"http://x/r","tasked_at":"garbage","metadata":null}`))
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
	// tasked_at and duration are only recorded: no form of them is worth
	// a refusal. A number of seconds sent as a string is still read.
	base := `"artifact_type":"file","artifact_uri":"http://x/a","expiration":"2026-03-01T12:00:00Z","response_url":"http://x/r"`
	for _, tc := range []struct{ extra, duration string }{
		{`"tasked_at":1700000000`, ""},
		{`"tasked_at":{"at":"2026-03-01T12:00:00Z"}`, ""},
		{`"tasked_at":null,"duration":null`, ""},
		{`"duration":"30"`, "30"},
		{`"duration":" 12.5 "`, "12.5"},
		{`"duration":"soon"`, ""},
		{`"duration":[30]`, ""},
		{`"duration":true`, ""},
		{`"duration":1e400`, ""},
	} {
		b, err := ParseBounty([]byte(`{"id":3,` + base + `,` + tc.extra + `}`))
		if err != nil {
			t.Errorf("%s: %v", tc.extra, err)
			continue
		}
		if string(b.Duration) != tc.duration || !b.TaskedAt.IsZero() {
			t.Errorf("%s: duration %q, tasked_at %v; want %q and none", tc.extra, b.Duration, b.TaskedAt, tc.duration)
		}
	}
}

// TestParseBountyDialects holds payloads as PolySwarm's own code writes
// them (polyswarm_engine, microengine-webhooks-py, their fixtures): each is
// accepted, read as meant, and what had to be assumed is remarked.
func TestParseBountyDialects(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	base := func(extra string) string {
		return `{"artifact_type":"file","artifact_uri":"http://x/a","expiration":"2026-03-01T12:05:00","response_url":"http://x/r"` + extra + `}`
	}
	for _, tc := range []struct {
		name   string
		body   string
		check  func(b Bounty) string
		remark string
	}{
		{"uuid id", base(`,"id":"0f8fad5b-d9cb-469f-a165-70867728950e"`), func(b Bounty) string {
			if b.IDText != "0f8fad5b-d9cb-469f-a165-70867728950e" || b.ID >= 0 || b.IDString() != b.IDText {
				return fmt.Sprintf("id %d text %q", b.ID, b.IDText)
			}
			return ""
		}, ""},
		{"integer id as a string", base(`,"id":"12"`), func(b Bounty) string {
			if b.ID != 12 || b.IDText != "" {
				return fmt.Sprintf("id %d text %q", b.ID, b.IDText)
			}
			return ""
		}, ""},
		{"id past 64 bits", base(`,"id":99999999999999999999`), func(b Bounty) string {
			if b.IDText != "99999999999999999999" || b.ID >= 0 {
				return fmt.Sprintf("id %d text %q", b.ID, b.IDText)
			}
			return ""
		}, ""},
		{"assertion_window", base(`,"id":1,"phase":"assertion_window"`), phaseIs(PhaseAssertion), ""},
		{"arbitration_window", base(`,"id":1,"phase":"arbitration_window"`), phaseIs(PhaseArbitration), ""},
		{"unknown phase", base(`,"id":1,"phase":"voting"`), phaseIs(PhaseAssertion), `unknown phase "voting": answered as assertion`},
		{"unknown phase, votes url", `{"id":1,"artifact_type":"file","artifact_uri":"http://x/a","expiration":"2026-03-01T12:05:00","response_url":"http://x/bounties/1/votes/","phase":"settle"}`,
			phaseIs(PhaseArbitration), "answered as arbitration"},
		{"wei in exponent form", base(`,"id":1,"rules":{"min_allowed_bid":6.25e+16,"max_allowed_bid":1e18}`), rulesAre("62500000000000000", "1000000000000000000"), ""},
		{"wei as strings", base(`,"id":1,"rules":{"min_allowed_bid":"62500000000000000","max_allowed_bid":"1.0E18"}`), rulesAre("62500000000000000", "1000000000000000000"), ""},
		{"min over max", base(`,"id":1,"rules":{"min_allowed_bid":10,"max_allowed_bid":5}`), rulesAre("5", "5"), "min_allowed_bid 10 exceeds max_allowed_bid 5"},
		{"sha256 and mimetype under metadata", base(`,"id":1,"metadata":{"sha256":"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855","mimetype":"text/plain"}`), func(b Bounty) string {
			if b.SHA256 != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" || b.Mimetype != "text/plain" {
				return fmt.Sprintf("sha256 %q mimetype %q", b.SHA256, b.Mimetype)
			}
			return ""
		}, ""},
		{"on-chain metadata: a list of objects", base(`,"id":1,"metadata":[{"mimetype":"text/plain","filename":"a.txt","sha256":null}]`), func(b Bounty) string {
			if b.Mimetype != "text/plain" || b.Fields()["filename"] != "a.txt" || b.Fields()["metadata.filename"] != "a.txt" {
				return fmt.Sprintf("mimetype %q fields %v", b.Mimetype, b.Fields())
			}
			return ""
		}, ""},
		{"invalid sha256", base(`,"id":1,"metadata":{"sha256":"asdf"}`), func(b Bounty) string {
			if b.SHA256 != "" {
				return "sha256 kept: " + b.SHA256
			}
			return ""
		}, `sha256 "asdf" is not 64 hex digits: the download was not verified`},
		{"no expiration", `{"id":1,"artifact_type":"file","artifact_uri":"http://x/a","response_url":"http://x/r"}`, func(b Bounty) string {
			if !b.Expiration.Equal(now.Add(90 * time.Second)) {
				return "expiration " + b.Expiration.String()
			}
			return ""
		}, ""},
		{"data: URI", `{"id":1,"artifact_type":"file","artifact_uri":"data:text/plain;base64,SGVsbG8=","response_url":"http://x/r"}`, func(b Bounty) string {
			if b.ArtifactURI != "data:text/plain;base64,SGVsbG8=" {
				return "uri " + b.ArtifactURI
			}
			return ""
		}, ""},
		{"older generation: guid, artifact_url, empty expiration, rules []", `{"guid":"a7e8818a-95fc-4487-ad9a-522f6cd88cb2","artifact_type":"file","artifact_url":"https://x/eicar.com","expiration":"","phase":"assertion","response_url":"http://x/r","rules":[]}`, func(b Bounty) string {
			if b.IDText != "a7e8818a-95fc-4487-ad9a-522f6cd88cb2" || b.ArtifactURI != "https://x/eicar.com" || !b.Expiration.Equal(now.Add(90*time.Second)) || b.Rules.MaxAllowedBid.Cmp(DefaultRules().MaxAllowedBid) != 0 {
				return fmt.Sprintf("%+v", b)
			}
			return ""
		}, ""},
		{"a link that cannot be downloaded is still accepted", `{"id":1,"artifact_type":"file","artifact_uri":"mock://example.com/eicar","response_url":"http://x/r","rules":{}}`, func(b Bounty) string {
			if b.ArtifactURI != "mock://example.com/eicar" {
				return "uri " + b.ArtifactURI
			}
			return ""
		}, ""},
		{"url bounty", `{"id":1,"artifact_type":"URL","artifact_uri":"http://x/a","response_url":"http://x/r"}`, func(b Bounty) string {
			if b.ArtifactType != "url" || b.ArtifactURI != "http://x/a" {
				return fmt.Sprintf("type %q uri %q", b.ArtifactType, b.ArtifactURI)
			}
			return ""
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := parseBounty([]byte(tc.body), now)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if problem := tc.check(b); problem != "" {
				t.Error(problem)
			}
			got := strings.Join(b.Remarks, "\n")
			if tc.remark == "" && got != "" || !strings.Contains(got, tc.remark) {
				t.Errorf("remarks %q, want %q", got, tc.remark)
			}
		})
	}
}

func phaseIs(p Phase) func(Bounty) string {
	return func(b Bounty) string {
		if b.Phase != p {
			return fmt.Sprintf("phase %q, want %q", b.Phase, p)
		}
		return ""
	}
}

func rulesAre(lo, hi string) func(Bounty) string {
	return func(b Bounty) string {
		if b.Rules.MinAllowedBid.String() != lo || b.Rules.MaxAllowedBid.String() != hi {
			return fmt.Sprintf("rules [%s, %s], want [%s, %s]", b.Rules.MinAllowedBid, b.Rules.MaxAllowedBid, lo, hi)
		}
		return ""
	}
}

// TestBountyRoundTrip: a record keeps every dialect's reading, so a stored
// text id is the same bounty after a restart.
func TestBountyRoundTrip(t *testing.T) {
	b, err := ParseBounty([]byte(`{"id":"abc","artifact_type":"file","artifact_uri":"http://x/a","response_url":"http://x/r","sha256":"asdf"}`))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var back Bounty
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Key(), b.Key()) || back.IDString() != "abc" || len(back.Remarks) != 1 {
		t.Errorf("round trip: %s", raw)
	}
}

// TestFieldsDeterministic: Fields once added keys to the map it ranged
// over, so "metadata.metadata.…" keys came and went at random.
func TestFieldsDeterministic(t *testing.T) {
	b, err := ParseBounty([]byte(`{"id":1,"artifact_type":"file","artifact_uri":"http://x/a","response_url":"http://x/r",
		"metadata":{"x":"top","metadata":{"x":"nested"},"a.b":"dotted","a":{"b":"path"},"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := b.Fields()
	for k := range want {
		if strings.HasPrefix(k, "metadata.metadata.metadata.") {
			t.Errorf("field %s: a key derived from a derived key", k)
		}
	}
	if want["metadata.x"] != "top" || want["metadata.metadata.x"] != "nested" {
		t.Errorf("metadata.x = %q, metadata.metadata.x = %q", want["metadata.x"], want["metadata.metadata.x"])
	}
	for range 200 {
		if got := b.Fields(); !maps.Equal(got, want) {
			t.Fatalf("Fields differs between calls:\n%v\n%v", got, want)
		}
	}
}

func TestFieldsLeaveDataOut(t *testing.T) {
	b, err := ParseBounty([]byte(`{"id":1,"artifact_type":"file","artifact_uri":"data:text/plain;base64,SGVsbG8=","response_url":"http://x/r"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Fields()["artifact_uri"]; got != "data:text/plain;base64,…" {
		t.Errorf("artifact_uri field %q", got)
	}
}

// FuzzParseBounty: whatever a body holds, ParseBounty does not panic, and
// a bounty it accepts is stored as a record that reads back as the same
// bounty (a record that cannot be read back was once stored for metadata
// nested 9,999 deep, and blocked recovery). The seeds run with go test;
// `go test -fuzz FuzzParseBounty ./host/marketplace` explores further.
func FuzzParseBounty(f *testing.F) {
	for _, seed := range []string{
		validBody,
		`{"id":"0f8fad5b-d9cb-469f-a165-70867728950e","artifact_type":"file","artifact_uri":"data:,x","response_url":"http://x/r","phase":"assertion_window","metadata":{"sha256":"asdf"}}`,
		`{"guid":"g","artifact_type":"file","artifact_url":"http://x/a","expiration":"","response_url":"http://x/r","rules":[]}`,
		`{"id":1,"artifact_type":"file","artifact_uri":"http://x/a","response_url":"http://x/r","rules":{"min_allowed_bid":"6.25e+16","max_allowed_bid":1e18},"metadata":[{"mimetype":"a"}]}`,
		`{"id":1,"artifact_type":"file","artifact_uri":"http://x/a","response_url":"http://x/r","metadata":{"a":{"b":{"c":[[[1]]]}}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := ParseBounty(body)
		if err != nil {
			return
		}
		raw, err := json.Marshal(Record{Bounty: b, State: StateOpen})
		if err != nil {
			t.Fatalf("accepted %s, cannot encode its record: %v", body, err)
		}
		var back Record
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatalf("accepted %s, its record does not read back: %v", body, err)
		}
		if !bytes.Equal(back.Bounty.Key(), b.Key()) || back.Bounty.IDString() != b.IDString() || back.Bounty.ArtifactURI != b.ArtifactURI {
			t.Fatalf("accepted %s, read back as another bounty: %s", body, raw)
		}
		if !maps.Equal(back.Bounty.Fields(), b.Fields()) {
			t.Fatalf("accepted %s, its fields change on the way through the store", body)
		}
	})
}
