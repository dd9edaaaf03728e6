// Package bountiesdbtest writes bounties.db files the way engines before
// JetStream did, for the tests of what reads and migrates them: the
// engine itself never writes one any more.
package bountiesdbtest

import (
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/microengine/microengine/host/marketplace/bountiesdb"
)

// Record is one stored record: the bounty's key (id, 8 bytes big-endian,
// then phase) and its JSON, byte for byte as it is to be stored.
type Record struct {
	Key, Raw []byte
}

// Write creates the file at path with the old store's four buckets and
// recs in its bounties bucket. The index buckets stay empty: readers of
// the old file never relied on them.
func Write(t testing.TB, path string, recs ...Record) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{bountiesdb.Bucket, "open", "done", "deliveries"} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		b := tx.Bucket([]byte(bountiesdb.Bucket))
		for _, r := range recs {
			if err := b.Put(r.Key, r.Raw); err != nil {
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
