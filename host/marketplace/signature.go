package marketplace

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Sign returns the X-POLYSWARM-SIGNATURE of body under secret: the
// lowercase hex HMAC-SHA256 of the raw bytes.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// verifySignature reports whether sig is body's HMAC under any of secrets.
// The comparison is constant-time per secret, and every secret is tried
// (no early exit), so timing tells nothing about which one matched.
func verifySignature(secrets []string, body []byte, sig string) bool {
	got, err := hex.DecodeString(strings.TrimSpace(sig))
	if err != nil || len(got) != sha256.Size {
		return false
	}
	ok := false
	for _, s := range secrets {
		m := hmac.New(sha256.New, []byte(s))
		m.Write(body)
		if hmac.Equal(m.Sum(nil), got) {
			ok = true
		}
	}
	return ok
}
