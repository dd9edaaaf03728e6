// Package bountiesdbtest writes bounties.db files the way engines before
// JetStream did, for the tests of what reads and migrates them: the
// engine itself never writes one any more.
package bountiesdbtest

import (
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/microengine/microengine/host/marketplace/bountiesdb"
)

// Record is one stored record: the bounty's key (id, 8 bytes big-endian,
// then phase) and its JSON, byte for byte as it is to be stored.
type Record struct {
	Key, Raw []byte
	// Open indexes the record as open, at Expiration; else a nonzero
	// Finished indexes it as finished then. Neither leaves it out of the
	// indexes (as a record an index lost).
	Open       bool
	Expiration time.Time
	Finished   time.Time
}

// Write creates the file at path with the old store's four buckets, recs
// in its bounties bucket and their entries in its time indexes.
func Write(t testing.TB, path string, recs ...Record) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{bountiesdb.Bucket, bountiesdb.OpenIndex, bountiesdb.DoneIndex, "deliveries"} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		b := tx.Bucket([]byte(bountiesdb.Bucket))
		for _, r := range recs {
			if err := b.Put(r.Key, r.Raw); err != nil {
				return err
			}
			index, at := bountiesdb.DoneIndex, r.Finished
			if r.Open {
				index, at = bountiesdb.OpenIndex, r.Expiration
			} else if at.IsZero() {
				continue
			}
			if err := tx.Bucket([]byte(index)).Put(append(bountiesdb.IndexTime(at), r.Key...), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}
