package answerschema

import (
	"strings"
	"testing"
)

const goodMeta = `{"malware_family":"EICAR","product":"microengine","heuristic":false,"confidence":1,
 "scanner":{"version":"1.0.0","version_full":"1.0.0-rc1","vendor_version":"1.4.6","signatures_version":"27000","environment":{"operating_system":"linux","architecture":"amd64"}}}`

func meta(family, confidence, extra string) string {
	return `{"malware_family":"` + family + `","product":"microengine","heuristic":false,"confidence":` + confidence +
		`,"scanner":{"version":"1.0.0","vendor_version":"","signatures_version":"","environment":{"operating_system":"linux","architecture":"amd64"}}` + extra + `}`
}

func TestCheckAccepts(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		body string
	}{
		{Assertion, `{"verdict":"malicious","bid":1000000000000000000,"metadata":` + goodMeta + `}`},
		{Assertion, `{"verdict":"benign","bid":62500000000000000,"metadata":` + meta("", "0.5", "") + `}`},
		{Assertion, `{"verdict":"unknown","bid":0,"metadata":` + meta("", "0", `,"comments":["SKIPPED:CANNOT-FETCH","sha256 \"asdf\" is not 64 hex digits"]`) + `}`},
		{Assertion, `{"verdict":"benign","bid":62500000000000000,"metadata":` + meta("", "0.5", `,"comments":["unknown phase \"x\": answered as assertion"],"domains":[],"ip_addresses":["127.0.0.1"]`) + `}`},
		{Vote, `{"verdict":"suspicious","metadata":` + meta("", "0", "") + `}`},
		{Assertion, `{"verdict":"unknown","bid":0,"metadata":` + meta("", "0", `,"backends":[{"name":"yara","verdict":"unknown","matches":[{"rule":"ns:r"}]}]`) + `}`},
	} {
		if err := Check([]byte(tc.body), tc.kind); err != nil {
			t.Errorf("%s %s: %v", tc.kind, tc.body, err)
		}
	}
}

func TestCheckRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind Kind
		body string
		want string
	}{
		{"not JSON", Assertion, `{"verdict":`, "not JSON"},
		{"verdict", Assertion, `{"verdict":"clean","bid":0,"metadata":` + meta("", "0", "") + `}`, "/verdict"},
		{"no bid", Assertion, `{"verdict":"benign","metadata":` + meta("", "0.5", "") + `}`, "bid"},
		{"float bid", Assertion, `{"verdict":"benign","bid":6.25e+16,"metadata":` + meta("", "0.5", "") + `}`, "not a JSON integer literal"},
		{"string bid", Assertion, `{"verdict":"benign","bid":"1","metadata":` + meta("", "0.5", "") + `}`, "/bid"},
		{"negative bid", Assertion, `{"verdict":"benign","bid":-1,"metadata":` + meta("", "0.5", "") + `}`, "/bid"},
		{"unknown bids", Assertion, `{"verdict":"unknown","bid":5,"metadata":` + meta("", "0", "") + `}`, "/bid"},
		{"vote with bid", Vote, `{"verdict":"benign","bid":0,"metadata":` + meta("", "0.5", "") + `}`, "not"},
		{"family on benign", Assertion, `{"verdict":"benign","bid":1,"metadata":` + meta("X", "0.5", "") + `}`, "malware_family"},
		{"confidence on unknown", Assertion, `{"verdict":"unknown","bid":0,"metadata":` + meta("", "0.5", "") + `}`, "confidence"},
		{"confidence over 1", Assertion, `{"verdict":"benign","bid":1,"metadata":` + meta("", "1.5", "") + `}`, "confidence"},
		{"no family", Assertion, `{"verdict":"benign","bid":1,"metadata":{"product":"microengine"}}`, "malware_family"},
		{"version rc", Assertion, `{"verdict":"benign","bid":1,"metadata":` + strings.Replace(meta("", "0.5", ""), `"version":"1.0.0"`, `"version":"1.0.0-rc1"`, 1) + `}`, "/metadata/scanner/version"},
		{"product case", Assertion, `{"verdict":"benign","bid":1,"metadata":` + strings.Replace(meta("", "0.5", ""), "microengine", "Micro Engine", 1) + `}`, "/metadata/product"},
		{"comments not a list", Assertion, `{"verdict":"unknown","bid":0,"metadata":` + meta("", "0", `,"comments":"SKIPPED:CANNOT-FETCH"`) + `}`, "comments"},
		{"non-standard SKIPPED", Assertion, `{"verdict":"unknown","bid":0,"metadata":` + meta("", "0", `,"comments":["SKIPPED:BORED"]`) + `}`, "comments"},
		{"backend verdict", Assertion, `{"verdict":"unknown","bid":0,"metadata":` + meta("", "0", `,"backends":[{"name":"x","verdict":"clean"}]`) + `}`, "/metadata/backends/0/verdict"},
		{"SKIPPED on a verdict", Assertion, `{"verdict":"benign","bid":1,"metadata":` + meta("", "0.5", `,"comments":["SKIPPED:ENCRYPTED"]`) + `}`, "verdict"},
	} {
		err := Check([]byte(tc.body), tc.kind)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Check = %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}
