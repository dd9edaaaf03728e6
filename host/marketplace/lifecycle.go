package marketplace

import (
	"context"
	"time"

	"github.com/microengine/microengine/host/engine"
)

// Lifecycle is where bounties live from the webhook to the answer: the
// bbolt file of one engine (Store), or NATS JetStream (JetStore), embedded
// in the engine or shared by the engines of a cluster. Every method keeps
// the same promises on both: Put is durable before it returns, a bounty
// has one committed answer, and it is finished once.
type Lifecycle interface {
	// Put stores a new bounty as open; isNew is false for a redelivery.
	Put(ctx context.Context, b Bounty, delivery string, now time.Time) (isNew bool, err error)
	// CommitAnswer records the answer before it is posted; when one is
	// committed already it is returned instead (stored).
	CommitAnswer(ctx context.Context, key []byte, a *Answer, reason string, plugins []engine.PluginResult) (stored *Answer, err error)
	// Finish records how an open bounty ended; false when it was no
	// longer open.
	Finish(ctx context.Context, key []byte, o Outcome) (bool, error)
	// FinishAsync is Finish without waiting; done must be quick.
	FinishAsync(key []byte, o Outcome, done func(finished bool, err error))
	// Get returns a bounty's record.
	Get(key []byte) (Record, bool, error)
	// OpenKeysAfter calls fn for the open bounties this engine may take,
	// soonest expiration first, after the index entry after.
	OpenKeysAfter(after []byte, fn func(key []byte, expiration time.Time) bool) error
	// List calls fn for every stored bounty in id order.
	List(newestFirst bool, fn func(Record) bool) error
	// Prune deletes what finished before cutoff.
	Prune(ctx context.Context, cutoff time.Time) (int, error)
	// Counts returns how many stored bounties are in each state.
	Counts() (map[State]int, error)
	// Take claims an open bounty for this engine until it is finished or
	// the engine stops renewing the claim (Renew), so engines sharing a
	// cluster do not scan it twice. ok is false while another engine
	// holds it. takes counts the engines (and restarts) that took it: one
	// that keeps killing its engine is answered unknown, unscanned, once
	// takes passes MaxTakes.
	Take(ctx context.Context, key []byte) (takes int, ok bool, err error)
	// Renew extends this engine's claim; every RenewEvery while the
	// bounty is worked on. Zero RenewEvery: claims need no renewal.
	Renew(ctx context.Context, key []byte) error
	RenewEvery() time.Duration
	Close() error
}

// MaxTakes bounds how often a bounty is taken (by any engine, across
// restarts) before it is answered unknown without a scan: a bounty whose
// scan kills the engine every time still gets its answer.
const MaxTakes = 5

// The bbolt store has one process: whoever holds the file holds every
// bounty, and a bounty is taken as often as it is processed.

// Take always succeeds on the single-process store.
func (s *Store) Take(context.Context, []byte) (int, bool, error) { return 1, true, nil }

// Renew has nothing to renew on the single-process store.
func (s *Store) Renew(context.Context, []byte) error { return nil }

// RenewEvery is zero: claims on the single-process store never lapse.
func (s *Store) RenewEvery() time.Duration { return 0 }
