package marketplace

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
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

// timeKey prefixes a bounty key with a time, for the ordered indexes.
func timeKey(t time.Time, key []byte) []byte {
	k := make([]byte, 8, 8+len(key))
	binary.BigEndian.PutUint64(k, uint64(t.UnixNano()))
	return append(k, key...)
}

// Put stores a new bounty as open, durably, before it returns. A bounty
// already stored (the same delivery id, or the same id and phase) is not
// stored again: isNew is false and the redelivery is only counted.
func (s *Store) Put(ctx context.Context, b Bounty, delivery string, now time.Time) (isNew bool, err error) {
	err = s.write(ctx, func(tx *bolt.Tx) error {
		// Everything is recomputed inside: a batch may apply this twice.
		key := b.Key()
		isNew = false
		deliveries, bounties := tx.Bucket(bucketDeliveries), tx.Bucket(bucketBounties)
		known := false
		if delivery != "" {
			if k := deliveries.Get([]byte(delivery)); k != nil {
				// A redelivery: count it on the bounty it first delivered
				// (normally this one).
				key, known = append([]byte(nil), k...), true
			}
		}
		if raw := bounties.Get(key); raw != nil {
			var r Record
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("decode stored bounty %s: %w", b, err)
			}
			r.Redeliveries++
			if delivery != "" && !known && len(r.Deliveries) < maxDeliveries {
				r.Deliveries = append(r.Deliveries, delivery)
				if err := deliveries.Put([]byte(delivery), key); err != nil {
					return fmt.Errorf("index delivery: %w", err)
				}
			}
			return putRecord(bounties, key, r)
		}
		if known {
			return nil // its bounty was pruned: long expired
		}
		r := Record{Bounty: b, State: StateOpen, ReceivedAt: now.UTC()}
		if delivery != "" {
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
		var r Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("decode stored bounty: %w", err)
		}
		if r.State != StateOpen {
			return nil
		}
		r.State, r.FinishedAt = o.State, o.At.UTC()
		r.Answer, r.Reason, r.Plugins, r.PostAttempts = o.Answer, o.Reason, o.Plugins, o.PostAttempts
		if err := tx.Bucket(bucketOpen).Delete(timeKey(r.Bounty.Expiration, key)); err != nil {
			return fmt.Errorf("unindex open bounty: %w", err)
		}
		if err := tx.Bucket(bucketDone).Put(timeKey(r.FinishedAt, key), nil); err != nil {
			return fmt.Errorf("index finished bounty: %w", err)
		}
		*done = true
		return putRecord(bounties, key, r)
	}
}

func putRecord(b *bolt.Bucket, key []byte, r Record) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode bounty record: %w", err)
	}
	if err := b.Put(key, raw); err != nil {
		return fmt.Errorf("write bounty record: %w", err)
	}
	return nil
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
		ok = true
		return json.Unmarshal(raw, &r)
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
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOpen).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			exp := time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
			if !fn(k[8:], exp) {
				return nil
			}
		}
		return nil
	})
}

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
			var r Record
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("decode stored bounty %x: %w", k, err)
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
					var r Record
					if json.Unmarshal(raw, &r) == nil {
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
