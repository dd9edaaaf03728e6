package marketplace

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// data: URIs (RFC 2397) carry the artifact in the bounty itself:
// polyswarm_engine sends them. The body limit bounds them, and so does
// the artifact size limit once decoded.

func isDataURI(uri string) bool {
	return len(uri) >= 5 && strings.EqualFold(uri[:5], "data:")
}

// splitDataURI returns the media type (parameters included, as sent),
// whether the data is base64, and the data still percent-encoded.
func splitDataURI(uri string) (mediatype string, isBase64 bool, data string, err error) {
	if !isDataURI(uri) {
		return "", false, "", errors.New("not a data: URI")
	}
	head, data, ok := strings.Cut(uri[5:], ",")
	if !ok {
		return "", false, "", errors.New("data: URI without a comma before its data")
	}
	// RFC 2397's ";base64" is an ABNF literal, which matches in any case:
	// ";Base64" read as percent-encoded text would scan the base64 text
	// itself and answer for the wrong content.
	const b64 = ";base64"
	if len(head) >= len(b64) && strings.EqualFold(head[len(head)-len(b64):], b64) {
		head, isBase64 = head[:len(head)-len(b64)], true
	}
	return head, isBase64, data, nil
}

// decodeDataURI returns the content of a data: URI, refusing more than
// limit bytes. Percent-escapes are undone first (they may stand in base64
// data too); base64 is read with or without padding, in either alphabet.
func decodeDataURI(uri string, limit int64) ([]byte, error) {
	_, isBase64, data, err := splitDataURI(uri)
	if err != nil {
		return nil, err
	}
	raw, err := url.PathUnescape(data)
	if err != nil {
		return nil, fmt.Errorf("data: URI: %w", err)
	}
	if isBase64 {
		raw = strings.Map(func(r rune) rune {
			if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
				return -1
			}
			return r
		}, raw)
		if int64(base64.RawStdEncoding.DecodedLen(len(strings.TrimRight(raw, "=")))) > limit {
			return nil, fmt.Errorf("data: URI content is over the %d-byte limit", limit)
		}
		var out []byte
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if out, err = enc.DecodeString(raw); err == nil {
				return out, nil
			}
		}
		return nil, fmt.Errorf("data: URI: invalid base64: %w", err)
	}
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("data: URI content is over the %d-byte limit", limit)
	}
	return []byte(raw), nil
}
