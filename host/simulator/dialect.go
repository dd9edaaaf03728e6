package simulator

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// Dialect is the form the simulator writes bounties in.
type Dialect string

const (
	// DialectMarketplace is the marketplace's current form: integer ids,
	// top-level sha256 and mimetype, integer wei, POST to the URL given.
	DialectMarketplace Dialect = "marketplace"
	// DialectPolySwarm rotates through the forms PolySwarm's own code
	// sends (polyswarm_engine, microengine-webhooks-py and their
	// fixtures), which an engine must accept as well: string ids, the
	// *_window phase names, sha256 and mimetype under metadata, wei as
	// strings and in exponent form, data: URIs, the older generation's
	// guid / artifact_url / rules [], and POSTs to a queue's path.
	DialectPolySwarm Dialect = "polyswarm"
)

// ParseDialect reads a -dialect flag.
func ParseDialect(s string) (Dialect, error) {
	switch d := Dialect(strings.ToLower(strings.TrimSpace(s))); d {
	case "", DialectMarketplace:
		return DialectMarketplace, nil
	case DialectPolySwarm:
		return d, nil
	}
	return "", fmt.Errorf("unknown dialect %q (want marketplace or polyswarm)", s)
}

// maxDataURI bounds the content sent inline as a data: URI, so the
// bounty stays well inside an engine's body limit (64 KiB by default).
const maxDataURI = 16 << 10

// polyswarmForm rewrites bounty i (as built for the marketplace dialect)
// into one of PolySwarm's forms, and returns the URL to post it to.
func (s *sim) polyswarmForm(i int, id int64, body map[string]any, content []byte) string {
	moveToMetadata := func() {
		meta, _ := body["metadata"].(map[string]any)
		for _, k := range []string{"sha256", "mimetype"} {
			if v, ok := body[k]; ok {
				meta[k] = v
				delete(body, k)
			}
		}
	}
	postURL := s.opts.URL
	switch i % 4 {
	case 0: // polyswarm_engine: its own queue's path
		body["id"] = fmt.Sprintf("sim-%d", id)
		body["phase"] = "assertion_window"
		moveToMetadata()
		body["rules"] = map[string]any{"min_allowed_bid": s.opts.MinBid, "max_allowed_bid": s.opts.MaxBid}
		if u, err := url.Parse(s.opts.URL); err == nil {
			postURL = u.JoinPath("polyswarm-queue").String()
		}
	case 1: // polyswarm_engine's fixture: the content inline
		if len(content) <= maxDataURI {
			body["artifact_uri"] = "data:application/octet-stream;base64," + base64.StdEncoding.EncodeToString(content)
		}
		delete(body, "phase")
	case 2: // microengine-webhooks-py's integration fixtures
		body["guid"] = fmt.Sprintf("guid-%d", id)
		delete(body, "id")
		body["artifact_url"] = body["artifact_uri"]
		delete(body, "artifact_uri")
		if s.opts.MinBid == defaultMinBid && s.opts.MaxBid == defaultMaxBid {
			body["rules"] = []any{} // the usual bounds
		}
	case 3: // wei as Python's floats write them
		body["rules"] = map[string]any{"min_allowed_bid": exponentForm(s.opts.MinBid), "max_allowed_bid": exponentForm(s.opts.MaxBid)}
	}
	return postURL
}

// exponentForm writes an integer as Python's float repr does for large
// values ("62500000000000000" → 6.25e+16), exactly: only the trailing
// zeros move into the exponent.
func exponentForm(digits string) json.Number {
	trimmed := strings.TrimRight(digits, "0")
	if len(digits) < 2 || trimmed == "" || strings.ContainsAny(digits, "-.eE") {
		return json.Number(digits)
	}
	exp := len(digits) - 1
	mantissa := trimmed[:1]
	if len(trimmed) > 1 {
		mantissa += "." + trimmed[1:]
	}
	return json.Number(fmt.Sprintf("%se+%d", mantissa, exp))
}
