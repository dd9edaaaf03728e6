package marketplace

import (
	"strings"
	"testing"
)

func TestDecodeDataURI(t *testing.T) {
	for _, tc := range []struct{ uri, want, err string }{
		{"data:,Hi%2C%20Yo%21", "Hi, Yo!", ""},
		{"data:text/plain;charset=US-ASCII,plain", "plain", ""},
		{"data:text/plain;base64,SGVsbG8=", "Hello", ""},
		{"DATA:;BASE64,SGVsbG8", "Hello", ""},             // no padding
		{"data:text/plain;Base64,SGVsbG8=", "Hello", ""},  // RFC 2397's ABNF literals ignore case
		{"data:text/plain;bAsE64,SGVsbG8=", "Hello", ""},  // read as text, it would be scanned as "SGVsbG8="
		{"data:;base64,SGVs%62G8=", "Hello", ""},          // percent-escape inside base64
		{"data:;base64,SGVs bG8=", "Hello", ""},           // whitespace
		{"data:;base64,-_8=", "\xfb\xff", ""},             // URL-safe alphabet
		{"data:application/octet-stream;base64,", "", ""}, // empty
		{"data:;base64,SGVsbG8gd29ybGQ=", "", "over the 8-byte limit"},
		{"data:,123456789", "", "over the 8-byte limit"},
		{"data:;base64,!!!!", "", "invalid base64"},
		{"data:,%zz", "", "invalid URL escape"},
		{"data:text/plain", "", "without a comma"},
	} {
		got, err := decodeDataURI(tc.uri, 8)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.uri, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want %q", tc.uri, err, tc.err)
		case tc.err == "" && string(got) != tc.want:
			t.Errorf("%s = %q, want %q", tc.uri, got, tc.want)
		}
	}
}
