package marketplace

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

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
// theirs. Both stores (bbolt and JetStream) finish a record this way.
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

// timeKey prefixes a bounty key with a time, for the ordered indexes. The
// time is nanoseconds since 1970 and is clamped to what that holds
// (1970 .. 2262): UnixNano of a later time overflows, and a wrapped
// expiration would sort (and read back) as long past. The service bounds
// expirations far tighter (maxBountyLifetime); the clamp keeps the index
// ordered whatever a record holds.
func timeKey(t time.Time, key []byte) []byte {
	k := make([]byte, 8, 8+len(key))
	binary.BigEndian.PutUint64(k, indexTime(t))
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

// Put stores a new bounty as open, durably, before it returns. A bounty
// already stored (the same id and phase) is not stored again: isNew is
// false and the redelivery is only counted. The X-POLYSWARM-DELIVERY
// header is not covered by the signature, so a delivery id never stands
// for a bounty on its own: one that came first with another bounty is
// ignored, and this bounty is stored as what it is.
func (s *Store) Put(ctx context.Context, b Bounty, delivery string, now time.Time) (isNew bool, err error) {
	err = s.write(ctx, func(tx *bolt.Tx) error {
		// Everything is recomputed inside: a batch may apply this twice.
		key := b.Key()
		isNew = false
		deliveries, bounties := tx.Bucket(bucketDeliveries), tx.Bucket(bucketBounties)
		// indexDelivery: the id is new, so it is remembered for this bounty.
		indexDelivery, ours := false, false
		if delivery != "" {
			k := deliveries.Get([]byte(delivery))
			indexDelivery, ours = k == nil, bytes.Equal(k, key)
		}
		if raw := bounties.Get(key); raw != nil {
			r, err := decodeRecord(raw)
			if err != nil {
				// Not even salvageable: the janitor finishes it. The
				// redelivery is acknowledged, as storing it again cannot help.
				return nil
			}
			r.Redeliveries++
			if indexDelivery && len(r.Deliveries) < maxDeliveries {
				r.Deliveries = append(r.Deliveries, delivery)
				if err := deliveries.Put([]byte(delivery), key); err != nil {
					return fmt.Errorf("index delivery: %w", err)
				}
			}
			return putRecord(bounties, key, r)
		}
		if ours {
			return nil // a redelivery of a bounty since pruned: long expired
		}
		r := Record{Bounty: b, State: StateOpen, ReceivedAt: now.UTC()}
		if indexDelivery {
			r.Deliveries = []string{delivery}
			if err := deliveries.Put([]byte(delivery), key); err != nil {
				return fmt.Errorf("index delivery: %w", err)
			}
		}
		if err := tx.Bucket(bucketOpen).Put(timeKey(b.Expiration, key), nil); err != nil {
			return fmt.Errorf("index open bounty: %w", err)
		}
		isNew = true
		return putRecord(bounties, key, r)
	})
	if err != nil {
		return false, fmt.Errorf("store bounty %s: %w", b, err)
	}
	return isNew, nil
}

// ErrFinished means the bounty is no longer open: nothing is to be done.
var ErrFinished = errors.New("the bounty is already finished")

// CommitAnswer records the answer computed for an open bounty, before it
// is posted, so that every post, retry and restart sends this same answer.
// A bounty has one answer: when one is committed already, it is kept and
// returned (stored) to be posted instead. A bounty no longer open or no
// longer stored gives ErrFinished.
func (s *Store) CommitAnswer(ctx context.Context, key []byte, a *Answer, reason string, plugins []engine.PluginResult) (stored *Answer, err error) {
	err = s.write(ctx, func(tx *bolt.Tx) error {
		stored = nil
		bounties := tx.Bucket(bucketBounties)
		raw := bounties.Get(key)
		if raw == nil {
			return ErrFinished
		}
		r, err := decodeRecord(raw)
		if err != nil {
			return err
		}
		if r.State != StateOpen {
			return ErrFinished
		}
		if r.Answer != nil {
			stored = r.Answer
			return nil
		}
		r.Answer, r.Reason, r.Plugins = a, reason, plugins
		return putRecord(bounties, key, r)
	})
	if err != nil {
		return stored, fmt.Errorf("commit answer: %w", err)
	}
	return stored, nil
}

// Finish records how an open bounty ended. It reports false (and changes
// nothing) when the bounty is no longer open, so a bounty is finished once.
func (s *Store) Finish(ctx context.Context, key []byte, o Outcome) (bool, error) {
	var done bool
	err := s.write(ctx, finishOp(key, o, &done))
	if err != nil {
		return false, fmt.Errorf("record outcome: %w", err)
	}
	return done, nil
}

// FinishAsync is Finish without waiting: done is called from the store's
// writer goroutine once the outcome is committed, and must be quick.
func (s *Store) FinishAsync(key []byte, o Outcome, done func(finished bool, err error)) {
	var finished bool
	s.writeAsync(finishOp(key, o, &finished), func(err error) {
		if err != nil {
			err = fmt.Errorf("record outcome: %w", err)
		}
		done(finished && err == nil, err)
	})
}

func finishOp(key []byte, o Outcome, done *bool) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		*done = false
		bounties := tx.Bucket(bucketBounties)
		raw := bounties.Get(key)
		if raw == nil {
			return nil
		}
		r, err := decodeRecord(raw)
		if err != nil {
			// Unreadable even without its metadata (a store written by an
			// older version): finish what the key tells, so it is not
			// retried forever.
			r = placeholderRecord(key, err)
			if err := unindexOpen(tx, key, nil); err != nil {
				return err
			}
		} else {
			if r.State != StateOpen {
				return nil
			}
			if err := unindexOpen(tx, key, &r.Bounty.Expiration); err != nil {
				return err
			}
		}
		o.applyTo(&r)
		if err := tx.Bucket(bucketDone).Put(timeKey(r.FinishedAt, key), nil); err != nil {
			return fmt.Errorf("index finished bounty: %w", err)
		}
		*done = true
		return putRecord(bounties, key, r)
	}
}

// unindexOpen removes key from the open index: at its expiration when
// known, else wherever it is (a walk of the index, only for records that
// cannot be read).
func unindexOpen(tx *bolt.Tx, key []byte, exp *time.Time) error {
	open := tx.Bucket(bucketOpen)
	if exp != nil {
		if err := open.Delete(timeKey(*exp, key)); err != nil {
			return fmt.Errorf("unindex open bounty: %w", err)
		}
		return nil
	}
	c := open.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if bytes.Equal(k[8:], key) {
			if err := c.Delete(); err != nil {
				return fmt.Errorf("unindex open bounty: %w", err)
			}
			return nil
		}
	}
	return nil
}

// putRecord stores r, and never a record that would not read back: a
// bounty whose metadata cannot round-trip (nested past encoding/json's
// depth limit, say) is kept without it and marked Damaged, so it is
// answered unknown rather than stuck unreadable forever.
func putRecord(b *bolt.Bucket, key []byte, r Record) error {
	raw, err := encodeRecord(r)
	if err != nil && len(r.Bounty.Metadata) > 0 {
		r.Bounty.Metadata = nil
		r.Damaged = joinNonEmpty("; ", r.Damaged, "its metadata could not be stored: "+err.Error())
		raw, err = encodeRecord(r)
	}
	if err != nil {
		return err
	}
	if err := b.Put(key, raw); err != nil {
		return fmt.Errorf("write bounty record: %w", err)
	}
	return nil
}

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
// (written before putRecord checked round trips: metadata nested past the
// decoder's depth limit) is salvaged without its metadata and marked
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

// Get returns the stored record of a bounty key.
func (s *Store) Get(key []byte) (Record, bool, error) {
	var r Record
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketBounties).Get(key)
		if raw == nil {
			return nil
		}
		var err error
		r, err = decodeRecord(raw)
		ok = err == nil
		return err
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("read bounty record: %w", err)
	}
	return r, ok, nil
}

// OpenKeys calls fn with the key and expiration of each open bounty,
// soonest expiration first, until fn returns false. fn runs inside a read
// transaction: it must not write to the store, and key is only valid
// during the call.
func (s *Store) OpenKeys(fn func(key []byte, expiration time.Time) bool) error {
	return s.OpenKeysAfter(nil, fn)
}

// OpenKeysAfter is OpenKeys starting after the index entry after (from
// indexKey; nil starts at the soonest).
func (s *Store) OpenKeysAfter(after []byte, fn func(key []byte, expiration time.Time) bool) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOpen).Cursor()
		k, _ := c.First()
		if after != nil {
			k, _ = c.Seek(after)
			if k != nil && bytes.Equal(k, after) {
				k, _ = c.Next()
			}
		}
		for ; k != nil; k, _ = c.Next() {
			if len(k) < 8 {
				continue
			}
			exp := time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
			if !fn(k[8:], exp) {
				return nil
			}
		}
		return nil
	})
}

// indexKey is the open index's entry for a bounty key expiring at exp.
func indexKey(exp time.Time, key []byte) []byte { return timeKey(exp, key) }

// List calls fn for every stored bounty in id order (newest first when
// newestFirst: marketplace ids grow over time) until fn returns false.
func (s *Store) List(newestFirst bool, fn func(Record) bool) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketBounties).Cursor()
		first, next := c.First, c.Next
		if newestFirst {
			first, next = c.Last, c.Prev
		}
		for k, raw := first(); k != nil; k, raw = next() {
			r, err := decodeRecord(raw)
			if err != nil {
				r = placeholderRecord(k, err) // listed, so it is seen
			}
			if !fn(r) {
				return nil
			}
		}
		return nil
	})
}

// pruneChunk bounds one pruning transaction, so pruning a large backlog
// does not hold the writer (and every webhook) for long.
const pruneChunk = 256

// Prune deletes finished bounties that finished before cutoff, with their
// delivery ids. It returns how many it deleted.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	end := timeKey(cutoff, nil)
	total := 0
	for {
		var n int
		err := s.write(ctx, func(tx *bolt.Tx) error {
			n = 0
			bounties, deliveries := tx.Bucket(bucketBounties), tx.Bucket(bucketDeliveries)
			c := tx.Bucket(bucketDone).Cursor()
			for k, _ := c.First(); k != nil && bytes.Compare(k[:8], end) < 0 && n < pruneChunk; k, _ = c.First() {
				key := append([]byte(nil), k[8:]...)
				if raw := bounties.Get(key); raw != nil {
					if r, err := decodeRecord(raw); err == nil {
						for _, d := range r.Deliveries {
							if err := deliveries.Delete([]byte(d)); err != nil {
								return fmt.Errorf("delete delivery id: %w", err)
							}
						}
					}
					if err := bounties.Delete(key); err != nil {
						return fmt.Errorf("delete bounty: %w", err)
					}
				}
				if err := c.Delete(); err != nil {
					return fmt.Errorf("delete index entry: %w", err)
				}
				n++
			}
			return nil
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("prune bounty store: %w", err)
		}
		if n < pruneChunk {
			return total, nil
		}
	}
}

// Counts returns how many stored bounties are in each state.
func (s *Store) Counts() (map[State]int, error) {
	counts := map[State]int{}
	err := s.List(false, func(r Record) bool { counts[r.State]++; return true })
	return counts, err
}
