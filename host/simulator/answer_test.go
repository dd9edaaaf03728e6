package simulator

import (
	"strings"
	"testing"
)

func TestCheckAnswer(t *testing.T) {
	const lo, hi = "10", "100"
	meta := func(family, confidence, version string) string {
		return `{"malware_family":"` + family + `","product":"microengine","heuristic":false,"confidence":` + confidence +
			`,"scanner":{"version":"` + version + `","vendor_version":"1.4.6","signatures_version":"","environment":{"operating_system":"linux","architecture":"amd64"}}}`
	}
	for _, tc := range []struct{ body, problem string }{
		{`{"verdict":"malicious","bid":50,"metadata":` + meta("X", "1", "1.0.0") + `}`, ""},
		{`{"verdict":"unknown","bid":0,"metadata":` + meta("", "0", "1.0.0") + `}`, ""},
		{`{"verdict":"malicious","bid":50,"metadata":` + meta("X", "1", "1.0.0-rc1") + `}`, "breaks the schema"},
		{`{"verdict":"unknown","bid":0,"metadata":` + meta("", "0.5", "1.0.0") + `}`, "breaks the schema"},
		{`{"verdict":"malicious","bid":50.0,"metadata":{"malware_family":"X"}}`, "not a JSON integer"},
		{`{"verdict":"malicious","bid":"50","metadata":{"malware_family":"X"}}`, "not a JSON integer"},
		{`{"verdict":"malicious","bid":5,"metadata":{"malware_family":"X"}}`, "outside"},
		{`{"verdict":"unknown","bid":10,"metadata":{"malware_family":""}}`, "not 0"},
		{`{"verdict":"MALICIOUS","bid":50,"metadata":{"malware_family":"X"}}`, "not one of"},
		{`{"verdict":"benign","metadata":{"malware_family":""}}`, "no bid"},
		{`{"verdict":"benign","bid":10,"metadata":{}}`, "malware_family"},
		{`[]`, "not a JSON object"},
	} {
		_, problem := checkAnswer([]byte(tc.body), lo, hi)
		if (tc.problem == "") != (problem == "") || !strings.Contains(problem, tc.problem) {
			t.Errorf("%s: %q, want %q", tc.body, problem, tc.problem)
		}
	}
}

func TestExponentForm(t *testing.T) {
	for in, want := range map[string]string{
		"62500000000000000":   "6.25e+16",
		"1000000000000000000": "1e+18",
		"123":                 "1.23e+2",
		"0":                   "0",
		"7":                   "7",
	} {
		if got := string(exponentForm(in)); got != want {
			t.Errorf("exponentForm(%s) = %s, want %s", in, got, want)
		}
	}
}
