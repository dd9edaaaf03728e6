package simulator

import (
	"strings"
	"testing"
)

func TestCheckAnswer(t *testing.T) {
	const lo, hi = "10", "100"
	for _, tc := range []struct{ body, problem string }{
		{`{"verdict":"malicious","bid":50,"metadata":{"malware_family":"X"}}`, ""},
		{`{"verdict":"unknown","bid":0,"metadata":{"malware_family":""}}`, ""},
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
