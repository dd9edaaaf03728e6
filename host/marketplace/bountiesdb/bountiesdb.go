// Package bountiesdb reads bounties.db, the bbolt file in which engines
// before JetStream kept their bounties. It only reads: an engine that finds
// one moves its bounties into JetStream at start (marketplace's migration)
// and renames the file, and `microengine bounties` lists one that no engine
// of this version has started on yet.
//
// The file's layout, as those versions wrote it: a bucket "bounties" maps
// each bounty's key (its id, 8 bytes big-endian, then its phase) to its
// record, JSON; the buckets "open", "done" and "deliveries" only indexed
// those records and are not read.
package bountiesdb

import (
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// File is the old store's name under the data directory.
const File = "bounties.db"

// Bucket is the bucket holding the records, by bounty key.
const Bucket = "bounties"

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

// Close releases the file.
func (d *DB) Close() error {
	if d.db == nil {
		return nil
	}
	return d.db.Close()
}
