package marketplace

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/microengine/microengine/host/engine"
)

// State is where a stored bounty stands.
type State string

const (
	// StateOpen: stored, not answered yet; resumed after a restart.
	StateOpen State = "open"
	// StateAnswered: the answer was posted (2xx).
	StateAnswered State = "answered"
	// StateExpired: expired before an answer could be computed.
	StateExpired State = "expired"
	// StateFailed: an answer was computed but could not be posted before
	// the expiration.
	StateFailed State = "failed"
)

// maxDeliveries bounds the delivery ids remembered per bounty; further
// redeliveries are still recognised by the bounty's id and phase.
const maxDeliveries = 8

// Record is one stored bounty and, once finished, what became of it: the
// audit trail of what was answered, when, and with which plugin versions.
type Record struct {
	Bounty     Bounty    `json:"bounty"`
	State      State     `json:"state"`
	ReceivedAt time.Time `json:"received_at"`
	Deliveries []string  `json:"deliveries,omitempty"`
	// Redeliveries counts deliveries after the first.
	Redeliveries int       `json:"redeliveries,omitempty"`
	FinishedAt   time.Time `json:"finished_at,omitzero"`
	// Answer is what was posted (or would have been, when failed).
	Answer *Answer `json:"answer,omitempty"`
	// Reason explains an unknown answer, an expiry or a failure.
	Reason  string                `json:"reason,omitempty"`
	Plugins []engine.PluginResult `json:"plugins,omitempty"`
	// PostAttempts counts the POSTs to response_url.
	PostAttempts int `json:"post_attempts,omitempty"`
	// Damaged says why part of the bounty could not be kept (its metadata
	// would not read back): such a bounty is answered unknown, unscanned.
	Damaged string `json:"damaged,omitempty"`
	// Audited: finished by a version with the audit stream, where it is
	// listed from (its record in the records bucket goes after its
	// expiration). A finished record without it is listed from the
	// records bucket, where it stays the retention.
	Audited bool `json:"audited,omitempty"`
}

// Outcome is how a bounty finished.
type Outcome struct {
	State        State
	At           time.Time
	Answer       *Answer
	Reason       string
	Plugins      []engine.PluginResult
	PostAttempts int
}

// applyTo records the outcome in r. An outcome without an answer keeps the
// one committed before (CommitAnswer), and one without plugin results keeps
// theirs.
func (o Outcome) applyTo(r *Record) {
	r.State, r.FinishedAt = o.State, o.At.UTC()
	if o.Answer != nil || r.Answer == nil {
		r.Answer = o.Answer
	}
	r.Reason, r.PostAttempts = o.Reason, o.PostAttempts
	if o.Plugins != nil {
		r.Plugins = o.Plugins
	}
}

// indexKey is the open index's entry for a bounty key expiring at exp:
// the key prefixed with the expiration, so entries sort soonest first (a
// sweep resumes after one). The time is nanoseconds since 1970 and is clamped to what that holds
// (1970 .. 2262): UnixNano of a later time overflows, and a wrapped
// expiration would sort (and read back) as long past. The service bounds
// expirations far tighter (maxBountyLifetime); the clamp keeps the index
// ordered whatever a record holds.
func indexKey(exp time.Time, key []byte) []byte {
	k := make([]byte, 8, 8+len(key))
	binary.BigEndian.PutUint64(k, indexTime(exp))
	return append(k, key...)
}

// maxIndexTime is the latest time the nanosecond index holds.
var maxIndexTime = time.Unix(0, math.MaxInt64)

func indexTime(t time.Time) uint64 {
	switch {
	case t.Before(time.Unix(0, 0)):
		return 0
	case t.After(maxIndexTime):
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

// ErrFinished means the bounty is no longer open: nothing is to be done.
var ErrFinished = errors.New("the bounty is already finished")

// ErrStoreClosed is returned for writes after Close.
var ErrStoreClosed = errors.New("bounty store closed")

// encodeRecord marshals r and checks that it decodes again.
func encodeRecord(r Record) ([]byte, error) {
	raw, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode bounty record: %w", err)
	}
	var back Record
	if err := json.Unmarshal(raw, &back); err != nil {
		return nil, fmt.Errorf("encoded bounty record does not read back: %w", err)
	}
	return raw, nil
}

// errUndecodable marks a stored record that cannot be read at all, as
// against a store that could not be reached: only the first is finished as
// unreadable, the second is retried.
var errUndecodable = errors.New("decode stored bounty")

// decodeRecord reads a stored record. One that encoding/json cannot read
// (written by an older version into bounties.db before round trips were
// checked: metadata nested past the decoder's depth limit) is salvaged without its metadata and marked
// Damaged; only a record that is not even that is an error.
func decodeRecord(raw []byte) (Record, error) {
	var r Record
	err := json.Unmarshal(raw, &r)
	if err == nil {
		return r, nil
	}
	trimmed, ok := withoutMetadata(raw)
	if !ok {
		return Record{}, fmt.Errorf("%w: %w", errUndecodable, err)
	}
	var salvaged Record
	if json.Unmarshal(trimmed, &salvaged) != nil {
		return Record{}, fmt.Errorf("%w: %w", errUndecodable, err)
	}
	salvaged.Bounty.Metadata = nil
	salvaged.Damaged = joinNonEmpty("; ", salvaged.Damaged, "its metadata could not be read back: "+err.Error())
	return salvaged, nil
}

// withoutMetadata returns raw with bounty.metadata replaced by null. It
// walks tokens, which json.Decoder.Token does with no nesting limit.
func withoutMetadata(raw []byte) ([]byte, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') || !findKey(dec, "bounty") {
		return nil, false
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('{') || !findKey(dec, "metadata") {
		return nil, false
	}
	start := int(dec.InputOffset()) // just after the key: the colon and value follow
	end, ok := valueEnd(raw, start)
	if !ok {
		return nil, false
	}
	out := make([]byte, 0, len(raw)-(end-start)+5)
	out = append(append(append(out, raw[:start]...), ":null"...), raw[end:]...)
	return out, true
}

// findKey reads the members of the object dec is in until key, skipping
// other values; dec is then before key's value.
func findKey(dec *json.Decoder, key string) bool {
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		if k, _ := t.(string); k == key {
			return true
		}
		if !skipValue(dec) {
			return false
		}
	}
	return false
}

func skipValue(dec *json.Decoder) bool {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return true
		}
	}
}

// valueEnd returns where the value after the colon at raw[i:] ends. It
// counts brackets outside strings instead of decoding: the value is the
// one too deep for the decoder, and this is ~100 times faster than
// walking its tokens.
func valueEnd(raw []byte, i int) (int, bool) {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r' || raw[i] == ':') {
		i++
	}
	depth, inString := 0, false
	for ; i < len(raw); i++ {
		c := raw[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
				if depth == 0 {
					return i + 1, true
				}
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
			if depth == 0 {
				return i + 1, true
			}
			if depth < 0 {
				return i, true // a scalar ended by its object's close
			}
		case depth == 0 && c == ',':
			return i, true // a scalar value
		}
	}
	return 0, false
}

// placeholderRecord stands for a record that cannot be read at all: the
// key still gives the bounty's id and phase.
func placeholderRecord(key []byte, err error) Record {
	r := Record{State: StateOpen, Damaged: "the stored record cannot be read: " + err.Error()}
	if len(key) >= 8 {
		r.Bounty.ID = int64(binary.BigEndian.Uint64(key[:8]))
		r.Bounty.Phase = Phase(key[8:])
	}
	return r
}
