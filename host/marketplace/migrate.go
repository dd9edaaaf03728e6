package marketplace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/microengine/microengine/host/marketplace/bountiesdb"
)

// MigratedSuffix is added to bounties.db once its bounties are in
// JetStream.
const MigratedSuffix = ".migrated"

// oldStoreWait is how long the start waits for an engine of an older
// version to let go of bounties.db: one still running on the same data
// directory is an error, not a wait.
const oldStoreWait = time.Second

// migrateBountiesDB moves the bounties of a bounties.db (the store before
// JetStream) into st, open ones with their committed answers, so an
// upgraded engine answers what the old one accepted; the file is then
// renamed, kept for the record. A bounty already in st is left as it is,
// so a migration cut short is simply run again.
func migrateBountiesDB(ctx context.Context, path string, st *JetStore, log hclog.Logger) error {
	old, err := bountiesdb.Open(path, oldStoreWait)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("move %s into JetStream: %w", path, err)
	}
	moved, open := 0, 0
	var ierr error
	err = eachOldRecord(old, false, func(r Record) bool {
		if r.Bounty.ID == 0 && r.Bounty.ResponseURL == "" {
			return true // unreadable: nothing to answer with
		}
		var created bool
		created, ierr = st.importRecord(ctx, r)
		if created {
			moved++
			if r.State == StateOpen {
				open++
			}
		}
		return ierr == nil
	})
	old.Close()
	if err = errors.Join(err, ierr); err != nil {
		return fmt.Errorf("move %s into JetStream: %w", path, err)
	}
	if err := os.Rename(path, path+MigratedSuffix); err != nil {
		return fmt.Errorf("move %s into JetStream: %w", path, err)
	}
	log.Info("bounties moved from bounties.db into JetStream", "bounties", moved, "open", open, "file", path+MigratedSuffix)
	return nil
}

// ListBountiesDB calls fn for every bounty of a bounties.db that no engine
// of this version has moved into JetStream yet, in id order (newest first
// when newestFirst), until fn returns false. An engine of an older version
// holding the file gives an error wrapping bountiesdb.ErrBusy.
func ListBountiesDB(path string, newestFirst bool, fn func(Record) bool) error {
	db, err := bountiesdb.Open(path, 500*time.Millisecond)
	if err != nil {
		return err
	}
	defer db.Close()
	return eachOldRecord(db, newestFirst, fn)
}

// eachOldRecord decodes the records of an old bounties.db as fn takes
// them: one stored with metadata too deep to read back is salvaged
// without it (decodeRecord), one that cannot be read at all is listed as
// what its key tells, so it is seen.
func eachOldRecord(db *bountiesdb.DB, newestFirst bool, fn func(Record) bool) error {
	return db.Each(newestFirst, func(key, raw []byte) bool {
		r, err := decodeRecord(raw)
		if err != nil {
			r = placeholderRecord(key, err)
		}
		return fn(r)
	})
}

// importRecord stores r as it is, and its open entry when it is open.
func (s *JetStore) importRecord(ctx context.Context, r Record) (bool, error) {
	k := hexKey(r.Bounty.Key())
	raw, err := encodeForPut(r)
	if err != nil {
		return false, err
	}
	err = s.node.Retry(ctx, permanent, func(ctx context.Context) error {
		_, err := s.records.Create(ctx, k, raw)
		return err
	})
	created := err == nil
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return false, err
	}
	// Its open entry is made even when the record was moved by a run cut
	// short before it: a finished record's entry goes at the next sweep.
	if r.State == StateOpen {
		entry, _ := json.Marshal(openEntry{Expiration: r.Bounty.Expiration})
		err := s.node.Retry(ctx, permanent, func(ctx context.Context) error {
			_, err := s.open.Create(ctx, k, entry)
			return err
		})
		if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return created, err
		}
		if err == nil {
			s.apply(localEntry(k, entry), false)
		}
	}
	return created, nil
}
