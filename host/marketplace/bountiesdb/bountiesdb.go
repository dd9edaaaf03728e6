// Package bountiesdb reads bounties.db, the bbolt file in which engines
// before JetStream kept their bounties. It only reads: an engine that finds
// one moves its bounties into JetStream at start (marketplace's migration)
// and renames the file, and `microengine bounties` lists one that no engine
// of this version has started on yet.
//
// The file's layout, as those versions wrote it: a bucket "bounties" maps
// each bounty's key (its id, 8 bytes big-endian, then its phase) to its
// record, JSON. Two buckets index those records by time, in the same
// transactions: "open" (the open bounties, by expiration) and "done" (the
// finished ones, by finish), each entry a time (nanoseconds since 1970,
// 8 bytes big-endian) followed by the bounty's key, with no value. The
// bucket "deliveries" (delivery ids) is not read: each record lists its
// own.
package bountiesdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// File is the old store's name under the data directory.
const File = "bounties.db"

// The buckets: the records by bounty key, and the two time indexes.
const (
	Bucket    = "bounties"
	OpenIndex = "open"
	DoneIndex = "done"
)

// timeLength is the length of an index entry's time.
const timeLength = 8

// ErrBusy means another process holds the file: an engine of an older
// version is running on the same data directory.
var ErrBusy = errors.New("bounties.db is locked by another process (is an engine of an older version running on it?)")

// DB is an old bounties.db, open for reading.
type DB struct {
	db *bolt.DB // nil: the file is empty
}

// Open opens the file at path read-only, waiting at most timeout for the
// lock a running engine holds (the error then wraps ErrBusy). A missing
// file's error wraps fs.ErrNotExist. An empty file (an old engine killed
// while it created it) holds nothing: bbolt cannot open it read-only, and
// it must not keep the engine from starting.
func Open(path string, timeout time.Duration) (*DB, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open the old bounty store: %w", err)
	}
	if fi.Size() == 0 {
		return &DB{}, nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w", path, ErrBusy)
		}
		return nil, fmt.Errorf("open the old bounty store %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

// Each calls fn with every stored record, raw, in key order (the bounty
// id's: newest first when newestFirst) until fn returns false. key and
// raw are only valid during the call. A file without the bucket holds
// nothing.
func (d *DB) Each(newestFirst bool, fn func(key, raw []byte) bool) error {
	if d.db == nil {
		return nil
	}
	err := d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(Bucket))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		first, next := c.First, c.Next
		if newestFirst {
			first, next = c.Last, c.Prev
		}
		for k, raw := first(); k != nil; k, raw = next() {
			if !fn(k, raw) {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the old bounty store: %w", err)
	}
	return nil
}

// Get returns a copy of the record stored under key, or nil when the file
// holds none.
func (d *DB) Get(key []byte) ([]byte, error) {
	if d.db == nil {
		return nil, nil
	}
	var raw []byte
	err := d.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(Bucket)); b != nil {
			if v := b.Get(key); v != nil {
				raw = bytes.Clone(v)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the old bounty store: %w", err)
	}
	return raw, nil
}

// EachOpen calls fn with the records of the bounties indexed as open,
// soonest expiration first, until fn returns false. key and raw are only
// valid during the call.
func (d *DB) EachOpen(fn func(key, raw []byte) bool) error {
	return d.eachIndexed(OpenIndex, time.Time{}, fn)
}

// EachFinishedSince calls fn with the records of the bounties indexed as
// finished at or after since, latest finish first, until fn returns false.
// key and raw are only valid during the call.
func (d *DB) EachFinishedSince(since time.Time, fn func(key, raw []byte) bool) error {
	return d.eachIndexed(DoneIndex, since, fn)
}

// eachIndexed walks index: forward from the start when since is zero,
// else backward from the end down to since.
func (d *DB) eachIndexed(index string, since time.Time, fn func(key, raw []byte) bool) error {
	if d.db == nil {
		return nil
	}
	err := d.db.View(func(tx *bolt.Tx) error {
		idx, records := tx.Bucket([]byte(index)), tx.Bucket([]byte(Bucket))
		if idx == nil || records == nil {
			return nil
		}
		c := idx.Cursor()
		first, next := c.First, c.Next
		var floor []byte
		if !since.IsZero() {
			first, next = c.Last, c.Prev
			floor = IndexTime(since)
		}
		for k, _ := first(); k != nil; k, _ = next() {
			if len(k) <= timeLength {
				continue
			}
			if floor != nil && bytes.Compare(k[:timeLength], floor) < 0 {
				return nil
			}
			raw := records.Get(k[timeLength:])
			if raw == nil {
				continue // the index outlived its record: nothing to read
			}
			if !fn(k[timeLength:], raw) {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the old bounty store's %s index: %w", index, err)
	}
	return nil
}

// IndexTime is t as the time indexes hold it: nanoseconds since 1970,
// clamped to what that holds (1970 .. 2262), big-endian.
func IndexTime(t time.Time) []byte {
	n := uint64(0)
	switch {
	case t.Before(time.Unix(0, 0)):
	case t.After(time.Unix(0, math.MaxInt64)):
		n = math.MaxInt64
	default:
		n = uint64(t.UnixNano())
	}
	return binary.BigEndian.AppendUint64(nil, n)
}

// Close releases the file.
func (d *DB) Close() error {
	if d.db == nil {
		return nil
	}
	return d.db.Close()
}
