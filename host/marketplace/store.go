package marketplace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// StoreFile is the bounty store's name under the data directory.
const StoreFile = "bounties.db"

// Buckets. bounties holds one Record per bounty key; open and done are
// indexes ordered by time (expiration, resp. finish) so resuming and pruning
// never scan the whole store; deliveries maps X-POLYSWARM-DELIVERY ids to
// bounty keys for redelivery dedupe.
var (
	bucketBounties   = []byte("bounties")
	bucketOpen       = []byte("open")
	bucketDone       = []byte("done")
	bucketDeliveries = []byte("deliveries")
)

// ErrStoreBusy means another process (a running engine) holds the store.
var ErrStoreBusy = errors.New("the bounty store is locked by another process (is the engine running?)")

// ErrStoreClosed is returned for writes after Close.
var ErrStoreClosed = errors.New("bounty store closed")

// Store is the durable bounty store. Writes go through one writer goroutine
// that groups whatever writes are waiting into a single transaction and one
// fsync (group commit): under load many webhooks share a commit, and alone a
// write is committed at once, with no batching delay.
type Store struct {
	db       *bolt.DB
	readOnly bool

	mu     sync.RWMutex // guards closed against sends on ops
	closed bool
	ops    chan *writeOp
	wg     sync.WaitGroup

	commits, writes atomic.Int64
}

type writeOp struct {
	apply func(tx *bolt.Tx) error
	async bool // nobody waits for it: it may wait a little for company
	// done is called by the writer goroutine once the batch is committed
	// (or failed): it must be quick and must not write to the store.
	done func(error)
}

// maxBatch bounds one group commit, so a flood does not build one huge
// transaction that every waiter waits for.
const maxBatch = 512

// OpenStore opens (creating it if needed) the store at path for writing. It
// fails fast with ErrStoreBusy when another process holds it.
func OpenStore(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create the store's folder: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: time.Second,
		// The freelist is rebuilt on open rather than written at every
		// commit: fewer pages per fsync.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Growing the map makes the writer wait for every reader; start
		// it large (address space only) so that is rare.
		InitialMmapSize: 64 << 20,
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w", path, ErrStoreBusy)
		}
		return nil, fmt.Errorf("open the bounty store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketBounties, bucketOpen, bucketDone, bucketDeliveries} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise the bounty store %s: %w", path, err)
	}
	s := &Store{db: db, ops: make(chan *writeOp, maxBatch)}
	s.wg.Add(1)
	go s.writer()
	return s, nil
}

// OpenStoreReadOnly opens the store for reading, waiting at most timeout
// for the lock: a running engine holds it exclusively, and then the error
// wraps ErrStoreBusy.
func OpenStoreReadOnly(path string, timeout time.Duration) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open the bounty store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w", path, ErrStoreBusy)
		}
		return nil, fmt.Errorf("open the bounty store %s: %w", path, err)
	}
	return &Store{db: db, readOnly: true}, nil
}

// Close waits for pending writes to commit and closes the database.
func (s *Store) Close() error {
	if !s.readOnly {
		s.mu.Lock()
		if !s.closed {
			s.closed = true
			close(s.ops)
		}
		s.mu.Unlock()
		s.wg.Wait()
	}
	return s.db.Close()
}

// write hands apply to the writer and waits until its batch is committed
// (or ctx ends: the write may then still commit). When any write of a batch
// fails the batch is rolled back and each write retried in its own
// transaction, so one bad write fails alone: apply may run twice and must
// derive everything it records from the transaction it is given.
func (s *Store) write(ctx context.Context, apply func(tx *bolt.Tx) error) error {
	result := make(chan error, 1)
	if err := s.enqueue(ctx, &writeOp{apply: apply, done: func(err error) { result <- err }}); err != nil {
		return err
	}
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeAsync hands apply to the writer and returns at once; done is called
// from the writer goroutine after the commit.
func (s *Store) writeAsync(apply func(tx *bolt.Tx) error, done func(error)) {
	if err := s.enqueue(context.Background(), &writeOp{apply: apply, async: true, done: done}); err != nil {
		done(err)
	}
}

func (s *Store) enqueue(ctx context.Context, op *writeOp) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.readOnly {
		return ErrStoreClosed
	}
	select {
	case s.ops <- op:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// asyncDelay is how long a batch holding only asynchronous writes (which
// nobody waits for) may wait for company: outcomes then share a commit with
// each other or with the next webhook's bounty instead of costing an fsync
// each. A synchronous write ends the wait at once.
const asyncDelay = 5 * time.Millisecond

func (s *Store) writer() {
	defer s.wg.Done()
	batch := make([]*writeOp, 0, maxBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for op := range s.ops {
		batch = append(batch[:0], op)
		open := s.drainInto(&batch)
		if open && !anySync(batch) && len(batch) < maxBatch {
			timer.Reset(asyncDelay)
		wait:
			for len(batch) < maxBatch {
				select {
				case more, ok := <-s.ops:
					if !ok {
						break wait
					}
					batch = append(batch, more)
					if !more.async {
						s.drainInto(&batch)
						break wait
					}
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
		}
		s.commit(batch)
	}
}

// drainInto adds the writes already waiting, without blocking. It reports
// false when the queue is closed.
func (s *Store) drainInto(batch *[]*writeOp) bool {
	for len(*batch) < maxBatch {
		select {
		case more, ok := <-s.ops:
			if !ok {
				return false
			}
			*batch = append(*batch, more)
		default:
			return true
		}
	}
	return true
}

func anySync(batch []*writeOp) bool {
	for _, op := range batch {
		if !op.async {
			return true
		}
	}
	return false
}

// Commits returns how many write transactions (fsyncs) the writer made
// and how many writes they carried: their ratio is the group-commit gain.
func (s *Store) Commits() (commits, writes int64) { return s.commits.Load(), s.writes.Load() }

func (s *Store) commit(batch []*writeOp) {
	s.commits.Add(1)
	s.writes.Add(int64(len(batch)))
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, op := range batch {
			if err := op.apply(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || len(batch) == 1 {
		for _, op := range batch {
			op.done(err)
		}
		return
	}
	for _, op := range batch {
		s.commits.Add(1)
		op.done(s.db.Update(op.apply))
	}
}
