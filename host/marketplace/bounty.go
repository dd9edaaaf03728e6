package marketplace

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/microengine/microengine/shared"
)

// Phase is the stage of a bounty an engine is asked about.
type Phase string

const (
	// PhaseAssertion asks for a verdict and a bid.
	PhaseAssertion Phase = "assertion"
	// PhaseArbitration asks for a vote: a verdict, no bid.
	PhaseArbitration Phase = "arbitration"
)

// WeiPerNCT is 10^18: bids are integers in wei.
var weiPerNCT = new(big.Int).Exp(big.NewInt(10), big.NewInt(18), nil)

// WeiPerNCT returns 10^18 (a fresh value: big.Int is mutable).
func WeiPerNCT() *big.Int { return new(big.Int).Set(weiPerNCT) }

// DefaultRules are the usual bounds (1/16 NCT and 1 NCT), used when an
// assertion bounty carries no rules at all.
func DefaultRules() Rules {
	return Rules{
		MinAllowedBid: new(big.Int).Quo(weiPerNCT, big.NewInt(16)),
		MaxAllowedBid: new(big.Int).Set(weiPerNCT),
	}
}

// Rules bound the bid, in wei. big.Int marshals as a bare JSON integer.
type Rules struct {
	MinAllowedBid *big.Int `json:"min_allowed_bid"`
	MaxAllowedBid *big.Int `json:"max_allowed_bid"`
}

// Bounty is a validated bounty webhook. It is also what the store keeps, so
// its JSON form is stable.
type Bounty struct {
	ID int64 `json:"id"`
	// ArtifactType is lowercased; "file" or "url", or a type this engine
	// does not know, which is still answered (unknown, bid 0).
	ArtifactType string    `json:"artifact_type"`
	ArtifactURI  string    `json:"artifact_uri"`
	Expiration   time.Time `json:"expiration"`
	ResponseURL  string    `json:"response_url"`
	Phase        Phase     `json:"phase"`
	SHA256       string    `json:"sha256,omitempty"` // lowercase hex
	Mimetype     string    `json:"mimetype,omitempty"`
	// Metadata is the bounty's metadata object as sent.
	Metadata json.RawMessage `json:"metadata,omitempty"`
	Rules    Rules           `json:"rules"`
	// Duration is kept as sent (seconds, a JSON number).
	Duration json.Number `json:"duration,omitempty"`
	TaskedAt time.Time   `json:"tasked_at,omitzero"`
}

// Key identifies a bounty in the store: the id (big-endian, so keys sort
// by id) and the phase, since one bounty is asked about once per phase.
func (b Bounty) Key() []byte { return bountyKey(b.ID, b.Phase) }

func bountyKey(id int64, p Phase) []byte {
	k := make([]byte, 8, 8+len(p))
	binary.BigEndian.PutUint64(k, uint64(id))
	return append(k, p...)
}

// String names the bounty in logs: "123/assertion".
func (b Bounty) String() string { return fmt.Sprintf("%d/%s", b.ID, b.Phase) }

// Type is the artifact type, or false when this engine does not know it.
func (b Bounty) Type() (shared.ArtifactType, bool) {
	t, err := shared.ParseArtifactType(b.ArtifactType)
	return t, err == nil
}

// wireBounty is the body as sent. Fields whose JSON type matters beyond
// what encoding/json checks (integers, an object) are RawMessage and
// checked by hand; unknown fields are ignored, as the marketplace adds
// fields over time.
type wireBounty struct {
	ID           json.RawMessage `json:"id"`
	ArtifactType *string         `json:"artifact_type"`
	ArtifactURI  *string         `json:"artifact_uri"`
	Expiration   *string         `json:"expiration"`
	ResponseURL  *string         `json:"response_url"`
	Phase        *string         `json:"phase"`
	SHA256       *string         `json:"sha256"`
	Mimetype     *string         `json:"mimetype"`
	Metadata     json.RawMessage `json:"metadata"`
	Rules        *struct {
		Min json.RawMessage `json:"min_allowed_bid"`
		Max json.RawMessage `json:"max_allowed_bid"`
	} `json:"rules"`
	Duration json.RawMessage `json:"duration"`
	TaskedAt *string         `json:"tasked_at"`
}

// ParseBounty decodes and validates a bounty webhook body. The error reads
// well as the reason of a 400 answer.
func ParseBounty(body []byte) (Bounty, error) {
	var w wireBounty
	if err := json.Unmarshal(body, &w); err != nil {
		return Bounty{}, describeJSONError(err)
	}
	var b Bounty
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if id, err := jsonInteger(w.ID); err != nil {
		bad("id: %w", err)
	} else if !id.IsInt64() {
		bad("id: %s does not fit in 64 bits", id)
	} else {
		b.ID = id.Int64()
	}

	switch {
	case w.ArtifactType == nil || strings.TrimSpace(*w.ArtifactType) == "":
		bad("artifact_type: missing (want file or url)")
	default:
		b.ArtifactType = strings.ToLower(strings.TrimSpace(*w.ArtifactType))
	}

	if w.ArtifactURI == nil || strings.TrimSpace(*w.ArtifactURI) == "" {
		bad("artifact_uri: missing")
	} else {
		b.ArtifactURI = strings.TrimSpace(*w.ArtifactURI)
		// A url bounty's uri is the thing judged, whatever it looks like;
		// any other is downloaded, so it must be an http(s) URL.
		if b.ArtifactType != string(shared.ArtifactURL) {
			if err := checkHTTPURL(b.ArtifactURI); err != nil {
				bad("artifact_uri: %w", err)
			}
		}
	}

	if w.Expiration == nil {
		bad("expiration: missing")
	} else if t, err := ParseTimestamp(*w.Expiration); err != nil {
		bad("expiration: %w", err)
	} else {
		b.Expiration = t
	}

	if w.ResponseURL == nil || *w.ResponseURL == "" {
		bad("response_url: missing")
	} else if err := checkHTTPURL(*w.ResponseURL); err != nil {
		bad("response_url: %w", err)
	} else {
		b.ResponseURL = *w.ResponseURL
	}

	b.Phase = PhaseAssertion // payloads from before phases existed
	if w.Phase != nil && *w.Phase != "" {
		switch p := Phase(strings.ToLower(strings.TrimSpace(*w.Phase))); p {
		case PhaseAssertion, PhaseArbitration:
			b.Phase = p
		default:
			bad("phase: %q is neither assertion nor arbitration", *w.Phase)
		}
	}

	if w.SHA256 != nil && *w.SHA256 != "" {
		s := strings.ToLower(strings.TrimSpace(*w.SHA256))
		if _, err := hex.DecodeString(s); err != nil || len(s) != 64 {
			bad("sha256: %q is not 64 hex digits", *w.SHA256)
		} else {
			b.SHA256 = s
		}
	}
	if w.Mimetype != nil {
		b.Mimetype = *w.Mimetype
	}

	if m := bytes.TrimSpace(w.Metadata); len(m) > 0 && !bytes.Equal(m, []byte("null")) {
		if m[0] != '{' {
			bad("metadata: want an object")
		} else {
			b.Metadata = append(json.RawMessage(nil), m...)
		}
	}

	b.Rules = DefaultRules()
	if w.Rules != nil {
		for _, r := range []struct {
			name string
			raw  json.RawMessage
			dst  **big.Int
		}{{"min_allowed_bid", w.Rules.Min, &b.Rules.MinAllowedBid}, {"max_allowed_bid", w.Rules.Max, &b.Rules.MaxAllowedBid}} {
			if len(r.raw) == 0 || bytes.Equal(r.raw, []byte("null")) {
				continue // keep the usual bound
			}
			v, err := jsonInteger(r.raw)
			switch {
			case err != nil:
				bad("rules.%s: %w", r.name, err)
			case v.Sign() < 0:
				bad("rules.%s: must not be negative", r.name)
			default:
				*r.dst = v
			}
		}
		if b.Rules.MinAllowedBid.Cmp(b.Rules.MaxAllowedBid) > 0 {
			bad("rules: min_allowed_bid %s exceeds max_allowed_bid %s", b.Rules.MinAllowedBid, b.Rules.MaxAllowedBid)
		}
	}

	if d := bytes.TrimSpace(w.Duration); len(d) > 0 && !bytes.Equal(d, []byte("null")) {
		if _, err := strconv.ParseFloat(string(d), 64); err != nil || d[0] == '"' {
			bad("duration: want a number of seconds")
		} else {
			b.Duration = json.Number(d)
		}
	}
	// tasked_at is only recorded: a form we cannot read is not worth
	// refusing the bounty over.
	if w.TaskedAt != nil {
		if t, err := ParseTimestamp(*w.TaskedAt); err == nil {
			b.TaskedAt = t
		}
	}

	if len(errs) > 0 {
		return Bounty{}, errors.Join(errs...)
	}
	return b, nil
}

// jsonInteger reads a JSON integer literal of any size. A float (1.0, 1e18)
// or a quoted number is refused: the protocol sends integers.
func jsonInteger(raw json.RawMessage) (*big.Int, error) {
	s := string(bytes.TrimSpace(raw))
	if s == "" || s == "null" {
		return nil, errors.New("missing")
	}
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return nil, fmt.Errorf("want a JSON integer, got %s", truncate(s, 40))
	}
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return nil, fmt.Errorf("want a JSON integer, got %s", truncate(s, 40))
	}
	return v, nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("want an absolute http(s) URL, got %q", truncate(s, 200))
	}
	return nil
}

// describeJSONError rewords encoding/json's errors for a 400 reason,
// without naming our Go types.
func describeJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Errorf("body: want a JSON object, got %s", te.Value)
		}
		return fmt.Errorf("%s: wrong type (got a JSON %s)", te.Field, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("body is not valid JSON (offset %d): %w", se.Offset, err)
	}
	return fmt.Errorf("body is not valid JSON: %w", err)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Fields flattens the bounty for filters and for the plugins' metadata:
// the top-level fields by their wire names, then the metadata object's
// keys (nested objects as dotted paths, other values as compact JSON).
// A top-level field wins over a metadata key of the same name; every
// metadata key is also reachable as "metadata.KEY".
func (b Bounty) Fields() map[string]string {
	f := map[string]string{}
	if len(b.Metadata) > 0 {
		var m map[string]json.RawMessage
		if json.Unmarshal(b.Metadata, &m) == nil {
			flatten("", m, f, 0)
		}
		for k, v := range f {
			f["metadata."+k] = v
		}
	}
	f["id"] = strconv.FormatInt(b.ID, 10)
	f["artifact_type"] = b.ArtifactType
	f["artifact_uri"] = b.ArtifactURI
	f["phase"] = string(b.Phase)
	f["expiration"] = b.Expiration.Format(time.RFC3339Nano)
	if b.SHA256 != "" {
		f["sha256"] = b.SHA256
	}
	if b.Mimetype != "" {
		f["mimetype"] = b.Mimetype
	}
	if b.Duration != "" {
		f["duration"] = b.Duration.String()
	}
	return f
}

func flatten(prefix string, m map[string]json.RawMessage, out map[string]string, depth int) {
	for k, raw := range m {
		key := prefix + k
		raw = bytes.TrimSpace(raw)
		if len(raw) > 0 && raw[0] == '{' && depth < 4 {
			var sub map[string]json.RawMessage
			if json.Unmarshal(raw, &sub) == nil {
				flatten(key+".", sub, out, depth+1)
				continue
			}
		}
		var s string
		if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
			out[key] = s
			continue
		}
		var buf bytes.Buffer
		if json.Compact(&buf, raw) == nil {
			out[key] = buf.String()
		}
	}
}
