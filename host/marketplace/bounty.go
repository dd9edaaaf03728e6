package marketplace

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"net/url"
	"slices"
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

// Limits on what a bounty may carry. A bounty is a few hundred bytes; its
// metadata (filename, size, hashes) a few hundred more. The limits keep a
// hostile body from costing memory in every later read of the record, and
// keep each record well inside what encoding/json decodes back (it refuses
// nesting deeper than 10,000: a record of metadata nested 9,999 deep was
// stored and could never be read again).
const (
	// MaxMetadataSize bounds the metadata object, in bytes as sent.
	MaxMetadataSize = 32 << 10
	// MaxMetadataDepth bounds the nesting of objects and arrays in the
	// metadata object (the object itself is depth 1).
	MaxMetadataDepth = 16
	// maxTextID bounds an id sent as a string (PolySwarm's fixtures send
	// 36-character UUIDs).
	maxTextID = 128
	// maxExponent bounds a wei amount written with an exponent: 10^60 wei
	// is far beyond every NCT in existence (10^27 wei), and a bound keeps
	// "1e999999999" from costing a huge allocation.
	maxExponent = 60
)

// DefaultExpiry is the lifetime a bounty without an expiration gets,
// counted from its arrival: polyswarm_engine's default.
const DefaultExpiry = 90 * time.Second

// Bounty is a validated bounty webhook. It is also what the store keeps, so
// its JSON form is stable.
type Bounty struct {
	// ID is the bounty's integer id. An id the marketplace sends as text
	// (PolySwarm's fixtures send UUIDs), or a negative or over-long integer,
	// is kept in IDText and ID is derived from it (see textID): ID stays the
	// store's fixed-width key either way.
	ID     int64  `json:"id"`
	IDText string `json:"id_text,omitempty"`
	// ArtifactType is lowercased; "file" or "url", or a type this engine
	// does not know, which is still answered (unknown, bid 0).
	ArtifactType string `json:"artifact_type"`
	// ArtifactURI is where the content is downloaded from (http, https or
	// data:), for both types: a url bounty's content is the URL to judge.
	ArtifactURI string    `json:"artifact_uri"`
	Expiration  time.Time `json:"expiration"`
	ResponseURL string    `json:"response_url"`
	Phase       Phase     `json:"phase"`
	SHA256      string    `json:"sha256,omitempty"` // lowercase hex
	Mimetype    string    `json:"mimetype,omitempty"`
	// Metadata is the bounty's metadata object as sent.
	Metadata json.RawMessage `json:"metadata,omitempty"`
	Rules    Rules           `json:"rules"`
	// Duration is kept as sent (seconds, a JSON number).
	Duration json.Number `json:"duration,omitempty"`
	TaskedAt time.Time   `json:"tasked_at,omitzero"`
	// Remarks are what the parser had to assume or ignore to accept the
	// bounty (an unreadable sha256, an unknown phase, min > max): the
	// answer's comments carry them, so the marketplace sees why.
	Remarks []string `json:"remarks,omitempty"`

	// expirationAssumed: the webhook had no expiration, and Expiration is
	// DefaultExpiry from this delivery's arrival, so each delivery of the
	// bounty has another. Known at the webhook only (not stored).
	expirationAssumed bool
}

// Key identifies a bounty in the store: the id (big-endian, so keys sort
// by id) and the phase, since one bounty is asked about once per phase.
func (b Bounty) Key() []byte { return bountyKey(b.ID, b.Phase) }

func bountyKey(id int64, p Phase) []byte {
	k := make([]byte, 8, 8+len(p))
	binary.BigEndian.PutUint64(k, uint64(id))
	return append(k, p...)
}

// IDString is the id as the marketplace sent it.
func (b Bounty) IDString() string {
	if b.IDText != "" {
		return b.IDText
	}
	return strconv.FormatInt(b.ID, 10)
}

// String names the bounty in logs: "123/assertion".
func (b Bounty) String() string { return b.IDString() + "/" + string(b.Phase) }

// Type is the artifact type, or false when this engine does not know it.
func (b Bounty) Type() (shared.ArtifactType, bool) {
	t, err := shared.ParseArtifactType(b.ArtifactType)
	return t, err == nil
}

// textID derives the store's integer id of an id sent as text: the first
// 63 bits of its SHA-256 with the sign bit set. The marketplace's integer
// ids are never negative (a negative one is itself kept as text), so a
// derived id cannot meet a real one, and two texts meet with odds of
// 2^-63 per pair.
func textID(s string) int64 {
	sum := sha256.Sum256([]byte(s))
	return int64(binary.BigEndian.Uint64(sum[:8]) | 1<<63)
}

// wireBounty is the body as sent. Fields whose JSON type matters beyond
// what encoding/json checks (integers, an object) are RawMessage and
// checked by hand; unknown fields are ignored, as the marketplace adds
// fields over time.
type wireBounty struct {
	ID json.RawMessage `json:"id"`
	// GUID and ArtifactURL are the older webhook generation's names
	// (microengine-webhooks-py's integration fixtures), read when the
	// current ones are absent.
	GUID         json.RawMessage `json:"guid"`
	ArtifactType *string         `json:"artifact_type"`
	ArtifactURI  *string         `json:"artifact_uri"`
	ArtifactURL  *string         `json:"artifact_url"`
	Expiration   *string         `json:"expiration"`
	ResponseURL  *string         `json:"response_url"`
	Phase        *string         `json:"phase"`
	SHA256       *string         `json:"sha256"`
	Mimetype     *string         `json:"mimetype"`
	Metadata     json.RawMessage `json:"metadata"`
	// Rules is an object, or an empty list (the same fixtures send []).
	Rules    json.RawMessage `json:"rules"`
	Duration json.RawMessage `json:"duration"`
	TaskedAt json.RawMessage `json:"tasked_at"`
}

// ParseBounty decodes and validates a bounty webhook body. The error reads
// well as the reason of a 400 answer and names every faulty field.
//
// It accepts what PolySwarm's own code sends (a refusal counts against the
// engine): ids as integers or strings, the *_window phase names, wei in
// exponent form or as strings, sha256 and mimetype under metadata, no
// expiration (now + 90 s). What it must assume it notes in Remarks.
func ParseBounty(body []byte) (Bounty, error) { return parseBounty(body, time.Now()) }

func parseBounty(body []byte, now time.Time) (Bounty, error) {
	var w wireBounty
	if err := json.Unmarshal(body, &w); err != nil {
		return Bounty{}, describeJSONError(err)
	}
	p := bountyParser{w: &w, now: now}
	// Order matters where one field reads another: the metadata holds
	// polyswarm_engine's sha256 and mimetype, and an unknown phase is
	// read from the response URL.
	for _, step := range []func(){
		p.id, p.artifactType, p.artifactURI, p.expiration, p.responseURL, p.metadata,
		p.phase, p.sha256, p.mimetype, p.rules, p.duration, p.taskedAt,
	} {
		step()
	}
	if len(p.errs) > 0 {
		return Bounty{}, errors.Join(p.errs...)
	}
	return p.b, nil
}

// bountyParser holds one parse: each method reads one field of w into b
// and adds what is wrong with it to errs, so one answer names every fault.
type bountyParser struct {
	w    *wireBounty
	b    Bounty
	now  time.Time
	errs []error
	meta map[string]json.RawMessage // the metadata's top-level keys
}

func (p *bountyParser) bad(field, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf(field+": "+format, args...))
}

func (p *bountyParser) remark(format string, args ...any) {
	p.b.Remarks = append(p.b.Remarks, fmt.Sprintf(format, args...))
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// id reads an integer or a string. A non-negative integer that fits in 64
// bits is the id itself (a string of one is the same id); anything else is
// kept as text.
func (p *bountyParser) id() {
	raw := bytes.TrimSpace(p.w.ID)
	if isNull(raw) {
		raw = bytes.TrimSpace(p.w.GUID)
	}
	if isNull(raw) {
		p.bad("id", "missing")
		return
	}
	text := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			p.bad("id", "%v", err)
			return
		}
		text = strings.TrimSpace(text)
		if text == "" {
			p.bad("id", "empty")
			return
		}
	} else if _, err := jsonInteger(raw); err != nil {
		p.bad("id", "want an integer or a string: %v", err)
		return
	}
	if len(text) > maxTextID {
		p.bad("id", "%d characters, over the limit of %d", len(text), maxTextID)
		return
	}
	if n, err := strconv.ParseInt(text, 10, 64); err == nil && n >= 0 && strconv.FormatInt(n, 10) == text {
		p.b.ID = n
		return
	}
	p.b.ID, p.b.IDText = textID(text), text
}

func (p *bountyParser) artifactType() {
	if p.w.ArtifactType == nil || strings.TrimSpace(*p.w.ArtifactType) == "" {
		p.bad("artifact_type", "missing (want file or url)")
		return
	}
	p.b.ArtifactType = strings.ToLower(strings.TrimSpace(*p.w.ArtifactType))
}

// artifactURI is downloaded for every type: an http(s) URL, or a data: URI
// carrying the content itself. Any other form is still accepted: the
// download fails and the answer is unknown (SKIPPED:CANNOT-FETCH), which
// costs the engine less than a refusal.
func (p *bountyParser) artifactURI() {
	uri := p.w.ArtifactURI
	if uri == nil || strings.TrimSpace(*uri) == "" {
		uri = p.w.ArtifactURL
	}
	if uri == nil || strings.TrimSpace(*uri) == "" {
		p.bad("artifact_uri", "missing")
		return
	}
	p.b.ArtifactURI = strings.TrimSpace(*uri)
}

func (p *bountyParser) expiration() {
	if p.w.Expiration == nil || strings.TrimSpace(*p.w.Expiration) == "" {
		p.b.Expiration = p.now.UTC().Add(DefaultExpiry)
		p.b.expirationAssumed = true
		return
	}
	t, err := ParseTimestamp(*p.w.Expiration)
	if err != nil {
		p.bad("expiration", "%v", err)
		return
	}
	p.b.Expiration = t
}

func (p *bountyParser) responseURL() {
	if p.w.ResponseURL == nil || *p.w.ResponseURL == "" {
		p.bad("response_url", "missing")
		return
	}
	if err := checkHTTPURL(*p.w.ResponseURL); err != nil {
		p.bad("response_url", "%v", err)
		return
	}
	p.b.ResponseURL = *p.w.ResponseURL
}

// phase reads assertion or arbitration, also as PolySwarm's window names.
// A missing phase is an assertion (payloads from before phases existed);
// an unknown one is answered as the response URL asks: a vote when its
// path ends in /votes/, an assertion otherwise.
func (p *bountyParser) phase() {
	p.b.Phase = PhaseAssertion
	if p.w.Phase == nil || strings.TrimSpace(*p.w.Phase) == "" {
		return
	}
	name := strings.ToLower(strings.TrimSpace(*p.w.Phase))
	switch Phase(strings.TrimSuffix(name, "_window")) {
	case PhaseAssertion:
		return
	case PhaseArbitration:
		p.b.Phase = PhaseArbitration
		return
	}
	if u, err := url.Parse(p.b.ResponseURL); err == nil && strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), "/votes") {
		p.b.Phase = PhaseArbitration
	}
	p.remark("unknown phase %q: answered as %s", truncate(*p.w.Phase, 40), p.b.Phase)
}

// metadata keeps the object as sent, within MaxMetadataSize and
// MaxMetadataDepth. The on-chain generation's metadata was a list of
// objects, one per artifact (polyswarm-artifact's bounty.json): that is
// kept too, and its first object read as the metadata.
func (p *bountyParser) metadata() {
	m := bytes.TrimSpace(p.w.Metadata)
	if isNull(m) {
		return
	}
	switch {
	case m[0] != '{' && m[0] != '[':
		p.bad("metadata", "want an object")
	case len(m) > MaxMetadataSize:
		p.bad("metadata", "%d bytes, over the limit of %d", len(m), MaxMetadataSize)
	case jsonDepth(m) > MaxMetadataDepth:
		p.bad("metadata", "nested deeper than %d levels", MaxMetadataDepth)
	default:
		p.b.Metadata = append(json.RawMessage(nil), m...)
		// Only the top level: sha256 and mimetype are read from it.
		p.meta = metadataObject(m)
	}
}

// metadataObject is the metadata's object: itself, or the first element
// of a list of objects. Nil when there is none.
func metadataObject(raw json.RawMessage) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) == nil {
		return m
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil && len(list) > 0 && json.Unmarshal(list[0], &m) == nil {
		return m
	}
	return nil
}

// jsonDepth is the deepest nesting of objects and arrays in a valid JSON
// value, counted without decoding it.
func jsonDepth(raw []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range raw {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

// fromMetadata is field f from the top level, or else from the metadata
// object (polyswarm_engine's place for sha256 and mimetype).
func (p *bountyParser) fromMetadata(top *string, key string) (string, bool) {
	if top != nil && strings.TrimSpace(*top) != "" {
		return *top, true
	}
	var s string
	if raw, ok := p.meta[key]; ok && json.Unmarshal(raw, &s) == nil && strings.TrimSpace(s) != "" {
		return s, true
	}
	return "", false
}

// sha256 is verified against the download when it is 64 hex digits. One
// that is not (PolySwarm's fixture sends "asdf") is no reason to refuse:
// the download goes unverified and the answer says so.
func (p *bountyParser) sha256() {
	v, ok := p.fromMetadata(p.w.SHA256, "sha256")
	if !ok {
		return
	}
	s := strings.ToLower(strings.TrimSpace(v))
	if _, err := hex.DecodeString(s); err != nil || len(s) != 64 {
		p.remark("sha256 %q is not 64 hex digits: the download was not verified", truncate(v, 80))
		return
	}
	p.b.SHA256 = s
}

func (p *bountyParser) mimetype() {
	if v, ok := p.fromMetadata(p.w.Mimetype, "mimetype"); ok {
		p.b.Mimetype = v
	}
}

// rules reads the bid bounds. A missing bound keeps the usual one; min
// above max is clamped (the bid is then max), not refused.
func (p *bountyParser) rules() {
	p.b.Rules = DefaultRules()
	raw := bytes.TrimSpace(p.w.Rules)
	if isNull(raw) || bytes.Equal(raw, []byte("[]")) {
		return
	}
	var w struct {
		Min json.RawMessage `json:"min_allowed_bid"`
		Max json.RawMessage `json:"max_allowed_bid"`
	}
	if raw[0] != '{' || json.Unmarshal(raw, &w) != nil {
		p.bad("rules", "want an object with min_allowed_bid and max_allowed_bid")
		return
	}
	for _, r := range []struct {
		name string
		raw  json.RawMessage
		dst  **big.Int
	}{{"min_allowed_bid", w.Min, &p.b.Rules.MinAllowedBid}, {"max_allowed_bid", w.Max, &p.b.Rules.MaxAllowedBid}} {
		if isNull(r.raw) {
			continue
		}
		v, err := jsonWei(r.raw)
		switch {
		case err != nil:
			p.bad("rules."+r.name, "%v", err)
		case v.Sign() < 0:
			p.bad("rules."+r.name, "must not be negative")
		default:
			*r.dst = v
		}
	}
	if lo, hi := p.b.Rules.MinAllowedBid, p.b.Rules.MaxAllowedBid; lo.Cmp(hi) > 0 {
		p.remark("rules: min_allowed_bid %s exceeds max_allowed_bid %s: bids are clamped to the maximum", lo, hi)
		p.b.Rules.MinAllowedBid = new(big.Int).Set(hi)
	}
}

// duration is only recorded, so no form of it is worth refusing the
// bounty over: a number, or a string holding one, is kept; anything else
// is dropped.
func (p *bountyParser) duration() {
	d := bytes.TrimSpace(p.w.Duration)
	if isNull(d) {
		return
	}
	if d[0] == '"' {
		var s string
		if json.Unmarshal(d, &s) != nil {
			return
		}
		d = bytes.TrimSpace([]byte(s))
	}
	// A JSON number literal, finite as a float64 (json.Number must
	// marshal again: "Inf" parses as a float but is no JSON).
	if f, err := strconv.ParseFloat(string(d), 64); err != nil || math.IsInf(f, 0) || len(d) == 0 ||
		(d[0] != '-' && (d[0] < '0' || d[0] > '9')) || !json.Valid(d) {
		return
	}
	p.b.Duration = json.Number(d)
}

// taskedAt is only recorded: a form we cannot read (not a string, not
// ISO-8601) is not worth refusing the bounty over.
func (p *bountyParser) taskedAt() {
	var s string
	if isNull(p.w.TaskedAt) || json.Unmarshal(p.w.TaskedAt, &s) != nil {
		return
	}
	if t, err := ParseTimestamp(s); err == nil {
		p.b.TaskedAt = t
	}
}

// jsonInteger reads a JSON integer literal of any size. A float (1.0, 1e18)
// or a quoted number is refused: ids are integers.
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

// jsonWei reads an amount of wei as PolySwarm's code writes it: a JSON
// integer, a number in exponent or decimal form (Python's float
// 6.25e+16), or a string holding either. The value must be integral.
func jsonWei(raw json.RawMessage) (*big.Int, error) {
	s := string(bytes.TrimSpace(raw))
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("want a number of wei: %w", err)
		}
		s = strings.TrimSpace(s)
	}
	if v, err := jsonInteger(json.RawMessage(s)); err == nil {
		return v, nil
	}
	bad := fmt.Errorf("want a number of wei, got %s", truncate(string(raw), 40))
	mant, exp, hasExp := strings.Cut(strings.ToLower(s), "e")
	if mant == "" || strings.Trim(strings.TrimPrefix(mant, "-"), "0123456789.") != "" || strings.Count(mant, ".") > 1 {
		return nil, bad
	}
	if hasExp {
		e, err := strconv.Atoi(exp)
		if err != nil {
			return nil, bad
		}
		if e > maxExponent || e < -maxExponent {
			return nil, fmt.Errorf("%s: exponent out of range", truncate(s, 40))
		}
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return nil, bad
	}
	if !r.IsInt() {
		return nil, fmt.Errorf("%s is not a whole number of wei", truncate(s, 40))
	}
	return new(big.Int).Set(r.Num()), nil
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
		if m := metadataObject(b.Metadata); m != nil {
			// Flattened into its own map first: adding "metadata.KEY"
			// entries to the map being ranged over would let the range
			// visit some of them again, at random. The prefixed names are
			// written last, so "metadata.x" is always the key x, never a
			// nested {"metadata": {"x": …}}.
			meta := map[string]string{}
			flatten("", m, meta, 0)
			for k, v := range meta {
				f[k] = v
			}
			for k, v := range meta {
				f["metadata."+k] = v
			}
		}
	}
	f["id"] = b.IDString()
	f["artifact_type"] = b.ArtifactType
	f["artifact_uri"] = b.ArtifactURI
	if head, _, ok := strings.Cut(b.ArtifactURI, ","); ok && isDataURI(b.ArtifactURI) {
		// The content itself is no field: it would travel to every
		// plugin again as metadata.
		f["artifact_uri"] = head + ",…"
	}
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

// flatten visits keys in order, so when a dotted key and a nested path
// name the same field ({"a.b": 1, "a": {"b": 2}}) the same one wins every
// time.
func flatten(prefix string, m map[string]json.RawMessage, out map[string]string, depth int) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		key, raw := prefix+k, bytes.TrimSpace(m[k])
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
