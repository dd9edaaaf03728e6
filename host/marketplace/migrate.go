package marketplace

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
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

// moveWait bounds the part of the move made at start. It is not the
// connection's minute: a bounty window's finished bounties may take
// longer than that to move (1,100-3,600 records a second measured here on
// the embedded node).
const moveWait = 10 * time.Minute

// bountiesMove is the move of an older version's bounties.db into
// JetStream, in two parts. At start, before any bounty is resumed, what
// cannot wait: the open bounties (found by the file's open index), and the
// finished ones not expired yet (by its done index), as a redelivery of
// one of those would otherwise be taken for a new bounty and answered
// again. Then, while the engine runs (finish), the audit trail: every
// record, newest first, what is in already skipped (~13,000 a second
// here) — as many records as the retention kept, millions on a busy
// engine — after which the file is renamed. A move cut short is made
// again at the next start. A bounty already in JetStream is left as it
// is.
//
// Until the move is complete, a webhook looks its bounty up in the file
// first (recall): a record the file's indexes lost is in neither part
// made at start, and its redelivery would otherwise be taken for a new
// bounty and answered again, maybe differently.
type bountiesMove struct {
	path string
	st   *JetStore
	log  hclog.Logger

	mu     sync.RWMutex
	lookup *bountiesdb.DB // the file, for recall; nil once moved
}

// startBountiesMove makes the start's part of the move of the bounties.db
// at path, if there is one (nil when not).
func startBountiesMove(path string, st *JetStore, now time.Time, log hclog.Logger) (*bountiesMove, error) {
	db, err := bountiesdb.Open(path, oldStoreWait)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("move %s into JetStream: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), moveWait)
	defer cancel()
	m := &bountiesMove{path: path, st: st, log: log, lookup: db}
	// Its finished bounties go into the records bucket, not the audit
	// stream, kept the bucket's MaxAge (the retention): listed from there.
	if err := st.noteLegacy(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("move %s into JetStream: %w", path, err)
	}
	open, err := m.importEach(ctx, db.EachOpen, func(Record) bool { return true })
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("move the open bounties of %s into JetStream: %w", path, err)
	}
	// A bounty lives at most maxBountyLifetime: one finished before that
	// has expired.
	recent := func(fn func(key, raw []byte) bool) error {
		return db.EachFinishedSince(now.Add(-maxBountyLifetime), fn)
	}
	unexpired, err := m.importEach(ctx, recent, func(r Record) bool { return r.Bounty.Expiration.After(now) })
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("move the unexpired bounties of %s into JetStream: %w", path, err)
	}
	log.Info("open bounties moved from bounties.db into JetStream; the finished ones follow while the engine runs",
		"open", open, "finished_unexpired", unexpired, "file", path)
	return m, nil
}

// finish moves every record not moved yet, then renames the file, kept
// for the record.
func (m *bountiesMove) finish(ctx context.Context) error {
	db, err := bountiesdb.Open(m.path, oldStoreWait)
	if err != nil {
		return fmt.Errorf("move %s into JetStream: %w", m.path, err)
	}
	all := func(fn func(key, raw []byte) bool) error { return db.Each(true, fn) }
	moved, err := m.importEach(ctx, all, func(Record) bool { return true })
	db.Close()
	if err != nil {
		return fmt.Errorf("move %s into JetStream: %w", m.path, err)
	}
	// Everything is in JetStream: webhooks need the file no more.
	m.close()
	if err := os.Rename(m.path, m.path+MigratedSuffix); err != nil {
		return fmt.Errorf("move %s into JetStream: %w", m.path, err)
	}
	m.log.Info("bounties.db moved into JetStream", "bounties", moved, "file", m.path+MigratedSuffix)
	return nil
}

// recall moves the record of key from the file into JetStream, if the
// file holds one and the move has not reached it yet: a webhook calls it
// before storing its bounty. A bbolt read, microseconds, while the move
// lasts; nothing once it is complete.
func (m *bountiesMove) recall(ctx context.Context, key []byte) error {
	m.mu.RLock()
	db := m.lookup
	var raw []byte
	var err error
	if db != nil {
		raw, err = db.Get(key)
	}
	m.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("look the bounty up in %s: %w", m.path, err)
	}
	if raw == nil {
		return nil
	}
	r := decodeOld(key, raw)
	if string(r.Bounty.Key()) != string(key) {
		return nil // a record stored under another bounty's key: not this one
	}
	if _, err := m.st.importRecord(ctx, r); err != nil {
		return fmt.Errorf("move the bounty from %s into JetStream: %w", m.path, err)
	}
	return nil
}

// close releases the file kept open for recall.
func (m *bountiesMove) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lookup != nil {
		m.lookup.Close()
		m.lookup = nil
	}
}

// importEach moves the records each gives that want takes, and returns how
// many were not in JetStream yet.
func (m *bountiesMove) importEach(ctx context.Context, each func(func(key, raw []byte) bool) error, want func(Record) bool) (int, error) {
	moved := 0
	var ierr error
	err := each(func(key, raw []byte) bool {
		r := decodeOld(key, raw)
		if (r.Bounty.ID == 0 && r.Bounty.ResponseURL == "") || !want(r) {
			return true // unreadable: nothing to answer with
		}
		var created bool
		created, ierr = m.st.importRecord(ctx, r)
		if created {
			moved++
		}
		return ierr == nil
	})
	return moved, errors.Join(err, ierr)
}

// finishBountiesMove runs the rest of the move while the engine runs; the
// shutdown stops it, to go on at the next start.
func (s *Service) finishBountiesMove() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.drain:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := s.move.finish(ctx)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		s.log.Info("the move of bounties.db into JetStream stopped with the engine: it goes on at the next start")
	default:
		s.log.Error("cannot move bounties.db into JetStream: tried again at the next start", "error", err)
	}
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
	return db.Each(newestFirst, func(key, raw []byte) bool { return fn(decodeOld(key, raw)) })
}

// decodeOld reads a record of an old bounties.db: one stored with metadata
// too deep to read back is salvaged without it (decodeRecord), one that
// cannot be read at all stands as what its key tells, so it is seen. So
// does one that is not of the bounty its key names (JSON null, another
// bounty's record): moved under the bounty it holds, it would stand for
// that bounty, whose own webhook would then be taken for a redelivery
// and never answered.
func decodeOld(key, raw []byte) Record {
	r, err := decodeRecord(raw)
	if err == nil && len(key) >= 8 && !bytes.Equal(r.Bounty.Key(), key) {
		err = fmt.Errorf("it holds bounty %d/%s, not the one its key names", r.Bounty.ID, r.Bounty.Phase)
	}
	if err != nil {
		r = placeholderRecord(key, err)
	}
	return r
}

// importRecord stores r as it is, and its open entry when it is open.
func (s *JetStore) importRecord(ctx context.Context, r Record) (bool, error) {
	k := hexKey(r.Bounty.Key())
	raw, err := encodeForPut(r)
	if err != nil {
		return false, err
	}
	err = s.node.Retry(ctx, permanent, func(ctx context.Context) error {
		if r.State == StateOpen {
			// Its TTL as any open record's; finished, it has none.
			_, err := s.createRecord(ctx, k, raw, r.Bounty.Expiration)
			return err
		}
		if err := s.horizon.note(k, r.Bounty.Expiration); err != nil {
			return err
		}
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
