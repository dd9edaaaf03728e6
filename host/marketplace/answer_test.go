package marketplace

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/shared"
)

func TestMetadataVersion(t *testing.T) {
	pattern := regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)
	older := regexp.MustCompile(`^\d+\.\d+\.\d+$`)
	for _, tc := range []struct{ in, version, full string }{
		{"1.0.0", "1.0.0", ""},
		{"1.0.0-rc1", "1.0.0", "1.0.0-rc1"},
		{"0.1.0-test", "0.1.0", "0.1.0-test"},
		{"v2.3", "2.3.0", "v2.3"},
		{"12", "12.0.0", "12"},
		{"1.2.", "1.2.0", "1.2."},
		{"1.2.3.4", "1.2.3", "1.2.3.4"},
		{"dev", "0.0.0", "dev"},
		{"", "0.0.0", ""},
	} {
		v, full := metadataVersion(tc.in)
		if v != tc.version || full != tc.full || !pattern.MatchString(v) || !older.MatchString(v) {
			t.Errorf("metadataVersion(%q) = %q, %q; want %q, %q", tc.in, v, full, tc.version, tc.full)
		}
	}
}

type answerMetadata struct {
	Confidence *float64 `json:"confidence"`
	Comments   []string `json:"comments"`
	Scanner    struct {
		Version string `json:"version"`
	} `json:"scanner"`
}

func metadataOf(t *testing.T, a postedAnswer) answerMetadata {
	t.Helper()
	var md answerMetadata
	if err := json.Unmarshal(a.Body["metadata"], &md); err != nil {
		t.Fatalf("metadata of %s: %v", a.Raw, err)
	}
	return md
}

// TestAnswerComments: an unknown says why with PolySwarm's standard
// reasons, and what the engine had to assume is said too.
func TestAnswerComments(t *testing.T) {
	e := newTestEngine(t, eicarScanner(), func(_ *config.Marketplace, o *Options) { o.Version = "1.0.0-rc1" })
	clean := e.market.put("clean", []byte("hello"))
	for _, tc := range []struct {
		id       int64
		extra    map[string]any
		uri      string
		verdict  shared.Verdict
		comments []string
	}{
		{30, map[string]any{"artifact_type": "apk"}, clean, shared.VerdictUnknown, []string{shared.CommentTypeUnsupported}},
		{31, nil, e.market.srv.URL + "/artifacts/none", shared.VerdictUnknown, []string{shared.CommentCannotFetch}},
		{34, nil, "ftp://example.invalid/a", shared.VerdictUnknown, []string{shared.CommentCannotFetch}},
		{35, nil, "data:;base64,!!!", shared.VerdictUnknown, []string{shared.CommentCannotFetch}},
		{32, map[string]any{"sha256": "asdf"}, clean, shared.VerdictBenign, []string{`sha256 "asdf" is not 64 hex digits: the download was not verified`}},
		{33, nil, clean, shared.VerdictBenign, nil},
	} {
		e.accept(t, e.market.bountyJSON(tc.id, tc.uri, time.Minute, tc.extra))
		a := e.market.wait(5 * time.Second)
		md := metadataOf(t, a)
		if str(a.Body["verdict"]) != string(tc.verdict) || !slices.Equal(md.Comments, tc.comments) {
			t.Errorf("bounty %d: %s; want %s with comments %q", tc.id, a.Raw, tc.verdict, tc.comments)
		}
		if md.Scanner.Version != "1.0.0" || md.Confidence == nil {
			t.Errorf("bounty %d: scanner.version %q confidence %v", tc.id, md.Scanner.Version, md.Confidence)
		}
	}
}

// TestAnswerListsEveryBackend: each plugin asked appears with its own
// verdict, versions and matches (embedded as JSON, not as a string);
// plugins not asked do not.
func TestAnswerListsEveryBackend(t *testing.T) {
	res := engine.Policy{Plugins: map[string]engine.PluginPolicy{"yara": {MaxVerdict: shared.VerdictSuspicious}}}.Compose([]engine.PluginResult{
		{Name: "clamav", Supported: true, Verdict: shared.VerdictBenign, Confidence: 1, VendorVersion: "ClamAV 1.4.6", Version: "0.1.0"},
		{Name: "yara", Supported: true, Verdict: shared.VerdictMalicious, Confidence: 1, MalwareFamily: "Hunt", Version: "0.1.0",
			VendorVersion: "4.2.3", SignaturesVersion: "11 rules abc", Matches: json.RawMessage(`[{"rule":"hunting:x","class":"malicious"}]`)},
		{Name: "urlscan", Supported: false, Verdict: shared.VerdictUnknown},
	})
	raw, err := json.Marshal(newMetadata("1.0.0", Bounty{}, res))
	if err != nil {
		t.Fatal(err)
	}
	want := `"backends":[{"name":"clamav","verdict":"benign","version":"0.1.0","vendor_version":"ClamAV 1.4.6"},` +
		`{"name":"yara","verdict":"malicious","version":"0.1.0","vendor_version":"4.2.3","signatures_version":"11 rules abc","malware_family":"Hunt",` +
		`"matches":[{"rule":"hunting:x","class":"malicious"}],"capped":true}]`
	if res.Verdict != shared.VerdictSuspicious || !strings.Contains(string(raw), want) {
		t.Errorf("verdict %s, metadata %s\nwant it to hold %s", res.Verdict, raw, want)
	}
}
