package marketplace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/queue"
)

// The JetStream buckets. Records hold each bounty (with the
// X-POLYSWARM-DELIVERY ids it came with) until its expiration and
// recordGrace after it, each with its own TTL; a finished bounty is also
// appended to the audit stream (audit.go), kept for the retention. Open holds one small entry per open
// bounty with its expiration and its claim, which every engine watches to
// know what there is to do. Five writes carry a bounty: its record, its
// open entry (already claimed by the engine that stores it; a claim taken
// later is one more), its answer, its outcome and the entry's purge. One
// answered from the verdict cache before its webhook is acknowledged
// (putAnswered) takes two: its record with the answer, its outcome. The
// outcome's append to the audit stream is one more for either.
const (
	bucketRecords = "microengine_bounties"
	bucketOpenJS  = "microengine_open"
)

// openMarkerTTL is how long the marker a finished bounty's purge leaves in
// the open bucket is kept: long enough for every engine's watcher to see
// it (milliseconds; seconds through an election). Without it the marker
// stayed the bucket's whole TTL (25 h) and JetStream kept a per-subject
// index entry (~100 B) for each, one per bounty ever finished: 36,000
// after 180 s at 200/s. A watcher that misses one (an engine cut off for
// longer) drops the entry at its next claim, which finds no entry.
const openMarkerTTL = time.Minute

// claimTTL is how long a claim holds without renewal: an engine killed
// mid-scan delays its bounties by at most this before another engine (or
// itself, restarted) takes them. Renewed every claimTTL/3, the way a
// JetStream consumer's InProgress extends AckWait.
const claimTTL = 10 * time.Second

// openEntry is a bounty's entry in the open bucket.
type openEntry struct {
	Expiration time.Time `json:"exp"`
	Holder     string    `json:"holder,omitempty"`
	Until      time.Time `json:"until,omitzero"`
	Takes      int       `json:"takes,omitempty"`
	// Rescued: taken at its deadline from a holder whose claim had not
	// lapsed (rescueLead); such a claim is not taken over again before
	// it lapses.
	Rescued bool `json:"rescued,omitempty"`
}

// JetStore keeps the bounty lifecycle in NATS JetStream key-value buckets.
// Every change is a compare-and-set on the entry's revision, so engines
// sharing a cluster never commit two answers for a bounty nor finish it
// twice; every write is retried with back-off through leader elections.
type JetStore struct {
	node    *queue.Node
	records jetstream.KeyValue
	// auditStream holds the finished bounties for the retention; nil
	// when read from a store written before it.
	auditStream jetstream.Stream
	// grace is how long a record is kept after its bounty's expiration
	// (recordGrace; tests shorten it), recordTTL whether JetStream takes
	// per-message TTLs (nats-server 2.11+): without, records stay the
	// bucket's MaxAge.
	grace     time.Duration
	recordTTL bool
	recordAge time.Duration // the records bucket's MaxAge
	open      jetstream.KeyValue
	self      string // this engine's claim holder id
	embedded  bool   // the only engine: claims never wait for another
	claimTTL  time.Duration
	// rescueLead: a bounty still held by another engine this close to its
	// expiration may be taken over (RescueWithin); zero: never.
	rescueLead time.Duration
	log        hclog.Logger
	// markerTTL: the open bucket removes purge markers after
	// openMarkerTTL (nats-server 2.11+).
	markerTTL bool

	mu         sync.Mutex
	index      map[string]openEntry // the open bucket, kept by the watcher
	preclaim   bool
	preclaimed map[string]bool // stored taken by Put, not Taken yet

	// recent holds the open records this engine wrote last, each with
	// the revision it got, so the next change (the answer, the outcome)
	// is a compare-and-set on that revision without reading the record
	// first; a mismatch means another engine wrote it, and it is read
	// then. On the embedded node, the records' only writer, Get answers
	// from it too. A bounty leaves it when it is finished.
	recentMu    sync.Mutex
	recent      map[string]recentRecord
	recentSwept time.Time // when expired bounties last left recent

	// writes and reads count the operations on the buckets (each
	// attempt), for the benchmarks' per-bounty figures.
	writes, reads atomic.Int64

	// answeredWriteHook, set by tests only, runs before writeAnswered
	// writes: it may hold the write up, or fail it with its error.
	answeredWriteHook atomic.Pointer[func(context.Context) error]

	// horizon tells, on the embedded node, which bounties have no record
	// without a read.
	horizon *recordHorizon

	watcher jetstream.KeyWatcher
	wake    chan struct{} // signalled when another engine adds a bounty
	wg      sync.WaitGroup
	closeMu sync.Mutex
	closed  bool
}

// OpenJetStore creates (or updates) the buckets and the audit stream on
// node and loads the open index. retention bounds the audit trail; zero
// binds the existing ones without changing them (for reading). The store
// owns node: Close closes it.
func OpenJetStore(ctx context.Context, node *queue.Node, retention time.Duration, log hclog.Logger) (*JetStore, error) {
	return openJetStore(ctx, node, retention, recordGrace, log)
}

// openJetStore is OpenJetStore keeping records grace after their
// bounty's expiration.
func openJetStore(ctx context.Context, node *queue.Node, retention, grace time.Duration, log hclog.Logger) (*JetStore, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if grace <= 0 {
		grace = recordGrace
	}
	id := make([]byte, 6)
	_, _ = rand.Read(id)
	host, _ := os.Hostname()
	s := &JetStore{
		node: node, log: log, embedded: node.Embedded(),
		self:       fmt.Sprintf("%s-%d-%x", host, os.Getpid(), id),
		claimTTL:   claimTTL,
		grace:      grace,
		index:      map[string]openEntry{},
		preclaimed: map[string]bool{},
		recent:     map[string]recentRecord{},
		wake:       make(chan struct{}, 1),
	}
	if err := s.openAudit(ctx, retention); err != nil {
		return nil, err
	}
	if err := s.openHorizon(ctx); err != nil {
		return nil, err
	}
	buckets := []struct {
		kv  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&s.open, jetstream.KeyValueConfig{Bucket: bucketOpenJS, Description: "microengine open bounties and their claims", TTL: maxBountyLifetime + time.Hour}},
	}
	for _, b := range buckets {
		b.cfg.Storage = jetstream.FileStorage
		b.cfg.Replicas = node.Replicas
		b.cfg.History = 1
		b.cfg.LimitMarkerTTL = openMarkerTTL
		err := node.RetryStart(ctx, bucketMissing, func(ctx context.Context) error {
			var kv jetstream.KeyValue
			var err error
			if retention > 0 {
				kv, err = node.JS.CreateOrUpdateKeyValue(ctx, b.cfg)
				if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
					// A cluster older than nats-server 2.11: markers
					// stay the bucket's TTL.
					b.cfg.LimitMarkerTTL = 0
					kv, err = node.JS.CreateOrUpdateKeyValue(ctx, b.cfg)
				}
			} else {
				kv, err = node.JS.KeyValue(ctx, b.cfg.Bucket)
			}
			*b.kv = kv
			return err
		})
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("no bounties stored in JetStream yet (bucket %s): %w", b.cfg.Bucket, err)
		}
		if err != nil {
			return nil, fmt.Errorf("create the JetStream bucket %s: %w", b.cfg.Bucket, err)
		}
	}
	if st, err := s.open.Status(ctx); err == nil {
		s.markerTTL = st.LimitMarkerTTL() > 0
	}
	if err := s.watch(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// watch loads the open bucket and keeps the index up to date with every
// engine's changes.
func (s *JetStore) watch(ctx context.Context) error {
	w, err := s.open.WatchAll(context.Background())
	if err != nil {
		return fmt.Errorf("watch the open bounties: %w", err)
	}
	s.watcher = w
	loaded := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		initial := true
		for e := range w.Updates() {
			if e == nil {
				if initial {
					initial = false
					close(loaded)
				}
				continue
			}
			s.apply(e, !initial)
		}
		if initial {
			close(loaded)
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		w.Stop()
		return fmt.Errorf("load the open bounties: %w", ctx.Err())
	}
}

func (s *JetStore) apply(e jetstream.KeyValueEntry, live bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.index, e.Key())
		return
	}
	var o openEntry
	if err := json.Unmarshal(e.Value(), &o); err != nil {
		delete(s.index, e.Key())
		return
	}
	_, had := s.index[e.Key()]
	s.index[e.Key()] = o
	if live && !had {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Ops returns how many writes and reads the store has made on its
// buckets (every attempt counted): the benchmarks report them per bounty.
func (s *JetStore) Ops() (writes, reads int64) { return s.writes.Load(), s.reads.Load() }

// Wake is signalled when a bounty is added to the open bucket (by any
// engine): the janitor sweeps at once instead of at its next tick.
func (s *JetStore) Wake() <-chan struct{} { return s.wake }

func hexKey(key []byte) string { return hex.EncodeToString(key) }

// permanent: logical answers of the store, never retried.
func permanent(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) ||
		errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, ErrFinished) ||
		errors.Is(err, errHeld) || errors.Is(err, context.Canceled)
}

func bucketMissing(err error) bool { return errors.Is(err, jetstream.ErrBucketNotFound) }

var errHeld = errors.New("claimed by another engine")

// get reads key k of bucket kv, counted in the store's reads, retrying
// through elections.
func (s *JetStore) get(ctx context.Context, kv jetstream.KeyValue, k string) (jetstream.KeyValueEntry, error) {
	var e jetstream.KeyValueEntry
	err := s.node.Retry(ctx, permanent, func(ctx context.Context) error {
		s.reads.Add(1)
		var err error
		e, err = kv.Get(ctx, k)
		return err
	})
	return e, err
}

func (s *JetStore) getRecord(ctx context.Context, k string) (Record, uint64, bool, error) {
	e, err := s.get(ctx, s.records, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, 0, false, nil
	}
	if err != nil {
		return Record{}, 0, false, fmt.Errorf("read bounty record: %w", err)
	}
	r, err := decodeRecord(e.Value())
	if err != nil {
		key, _ := hex.DecodeString(k)
		return placeholderRecord(key, err), e.Revision(), true, err
	}
	return r, e.Revision(), true, nil
}

// maxRecent bounds the records kept in JetStore.recent: the bounties in
// flight (about 2,500 at 500/s answered within 5 s). Past it a record is
// read before it is changed, as every record was before. A bounty another
// engine of a cluster finished stays until it expires: once the map is
// full, those are dropped (at most every recentSweepEvery).
const (
	maxRecent        = 4096
	recentSweepEvery = time.Second
)

// recentRecord is an open record as this engine last wrote it.
type recentRecord struct {
	r   Record
	rev uint64
}

// remember keeps r, just written at rev, for the next change to k; a
// finished record is forgotten.
func (s *JetStore) remember(k string, r Record, rev uint64) {
	s.recentMu.Lock()
	defer s.recentMu.Unlock()
	if r.State != StateOpen {
		delete(s.recent, k)
		return
	}
	if _, ok := s.recent[k]; !ok && len(s.recent) >= maxRecent {
		if now := time.Now(); now.Sub(s.recentSwept) >= recentSweepEvery {
			s.recentSwept = now
			for k, c := range s.recent {
				if !now.Before(c.r.Bounty.Expiration) {
					delete(s.recent, k)
				}
			}
		}
		if len(s.recent) >= maxRecent {
			return
		}
	}
	s.recent[k] = recentRecord{r: r, rev: rev}
}

func (s *JetStore) forget(k string) {
	s.recentMu.Lock()
	delete(s.recent, k)
	s.recentMu.Unlock()
}

// recalled returns a copy of the record of k as this engine last wrote it.
func (s *JetStore) recalled(k string) (Record, uint64, bool) {
	s.recentMu.Lock()
	c, ok := s.recent[k]
	s.recentMu.Unlock()
	if !ok {
		return Record{}, 0, false
	}
	c.r.Deliveries = slices.Clone(c.r.Deliveries) // change may append
	return c.r, c.rev, true
}

// update applies change to the record of k with compare-and-set, reading
// again after a conflict: change must derive everything from the record
// it is given. It returns ErrFinished (or change's error) unchanged. The
// first attempt starts from the record as this engine last wrote it, when
// it has it: if anyone wrote it since, the revision does not match and it
// is read. Only what a record never loses once written (an answer, a
// finished state) may be concluded from it without a write.
func (s *JetStore) update(ctx context.Context, k string, change func(r *Record) error) error {
	r, rev, ok := s.recalled(k)
	for {
		if !ok {
			var err error
			r, rev, ok, err = s.getRecord(ctx, k)
			if !ok && err == nil {
				return ErrFinished
			}
			if err != nil && rev == 0 {
				return err
			}
		}
		if err := change(&r); err != nil {
			return err
		}
		raw, err := encodeStored(&r)
		if err != nil {
			return err
		}
		var next uint64
		err = s.node.Retry(ctx, permanent, func(ctx context.Context) error {
			s.writes.Add(1)
			var err error
			next, err = s.updateRecord(ctx, k, raw, rev, r.Bounty.Expiration, r.State != StateOpen && !r.Audited)
			return err
		})
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// Another engine (or a retried write of ours) got there
			// first: read what it wrote.
			s.forget(k)
			ok = false
			continue
		}
		if err != nil {
			s.forget(k)
			return err
		}
		s.remember(k, r, next)
		return nil
	}
}

// encodeForPut encodes r, never as a record that would not read back: a
// bounty whose metadata cannot round-trip (nested past encoding/json's
// depth limit, say) is kept without it and marked Damaged, so it is
// answered unknown rather than stuck unreadable forever.
func encodeForPut(r Record) ([]byte, error) { return encodeStored(&r) }

// encodeStored is encodeForPut leaving r as it is stored (without its
// metadata, marked Damaged, when that could not be kept): the record this
// engine remembers is the one it wrote.
func encodeStored(r *Record) ([]byte, error) {
	raw, err := encodeRecord(*r)
	if err != nil && len(r.Bounty.Metadata) > 0 {
		r.Bounty.Metadata = nil
		r.Damaged = joinNonEmpty("; ", r.Damaged, "its metadata could not be stored: "+err.Error())
		raw, err = encodeRecord(*r)
	}
	return raw, err
}

// Put stores a new bounty as open before it returns: its record and its
// open entry, written at once (two streams: the two fsyncs overlap). A
// redelivery is counted and makes sure an open bounty has its open entry
// (a crash between the two writes is mended by the marketplace's retry,
// as no 202 was sent; an entry left without its record is finished as
// expired by the sweep).
func (s *JetStore) Put(ctx context.Context, b Bounty, delivery string, now time.Time) (bool, error) {
	k := hexKey(b.Key())
	r := Record{Bounty: b, State: StateOpen, ReceivedAt: now.UTC()}
	if delivery != "" {
		r.Deliveries = []string{delivery}
	}
	raw, err := encodeStored(&r)
	if err != nil {
		return false, fmt.Errorf("store bounty %s: %w", b, err)
	}
	// The open entry is written beside the record, assuming the bounty is
	// new (it nearly always is).
	indexed := make(chan error, 1)
	var entryWasThere bool
	go func() {
		var err error
		entryWasThere, err = s.indexOpen(ctx, k, b.Expiration, now)
		indexed <- err
	}()
	var rev uint64
	err = s.node.Retry(ctx, permanent, func(ctx context.Context) error {
		s.writes.Add(1)
		var err error
		rev, err = s.createRecord(ctx, k, raw, b.Expiration)
		return err
	})
	isNew := err == nil
	ierr := <-indexed
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return false, fmt.Errorf("store bounty %s: %w", b, err)
	}
	if isNew {
		s.remember(k, r, rev)
		if ierr != nil {
			return false, fmt.Errorf("store bounty %s: index open bounty: %w", b, ierr)
		}
		return true, nil
	}
	state := StateOpen
	var stored Record
	err = s.update(ctx, k, func(r *Record) error {
		r.Redeliveries++
		if delivery != "" && len(r.Deliveries) < maxDeliveries && !slices.Contains(r.Deliveries, delivery) {
			r.Deliveries = append(r.Deliveries, delivery)
		}
		state, stored = r.State, *r
		return nil
	})
	if err != nil && !errors.Is(err, ErrFinished) {
		return false, fmt.Errorf("store bounty %s: count the redelivery: %w", b, err)
	}
	switch {
	case state != StateOpen:
		// Finished: the entry written beside it goes again. One that was
		// there already is a finish cut short before its audit; so may be
		// one finished moments ago (one answered from the verdict cache
		// has no open entry, and a crash before its 202 leaves it to this
		// redelivery): appended again within the stream's duplicate
		// window, it is stored once.
		if stored.Audited && (entryWasThere || now.Sub(stored.FinishedAt) < auditDuplicates) {
			if err := s.appendAudit(ctx, k, stored); err != nil {
				return false, fmt.Errorf("store bounty %s: %w", b, err)
			}
		}
		if err := s.unindex(ctx, k); err != nil {
			return false, fmt.Errorf("store bounty %s: %w", b, err)
		}
	case ierr != nil:
		// Open: its entry must be there (the first delivery's may have
		// been cut short).
		return false, fmt.Errorf("store bounty %s: index open bounty: %w", b, ierr)
	}
	return false, nil
}

// indexOpen writes the open entry of k; one already there is left as it
// is (there is then true). Stored by an engine that works on it at once,
// it is stored taken, and Take costs nothing.
func (s *JetStore) indexOpen(ctx context.Context, k string, expiration, now time.Time) (there bool, err error) {
	o := openEntry{Expiration: expiration}
	if s.preclaim {
		o.Holder, o.Until, o.Takes = s.self, now.Add(s.claimTTL), 1
	}
	entry, _ := json.Marshal(o)
	err = s.node.Retry(ctx, permanent, func(ctx context.Context) error {
		s.writes.Add(1)
		_, err := s.open.Create(ctx, k, entry)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	s.apply(localEntry(k, entry), false)
	if o.Holder != "" {
		s.mu.Lock()
		s.preclaimed[k] = true
		s.mu.Unlock()
	}
	return false, nil
}

// errNotStorable: the bounty cannot be stored whole with its answer (its
// metadata would not read back); Put stores it marked damaged instead.
var errNotStorable = errors.New("the bounty cannot be stored whole")

// putAnswered stores a new bounty with its answer already committed, in one
// write, and without an open entry: the caller posts the answer before it
// acknowledges the webhook, so until the 202 the marketplace's redelivery
// is what resumes it (Put then finds it open, answer committed, and
// indexes it). created is false for a redelivery, which is left to Put.
func (s *JetStore) putAnswered(ctx context.Context, b Bounty, delivery string, now time.Time, a *Answer, reason string, plugins []engine.PluginResult) (created bool, err error) {
	p, err := s.prepareAnswered(b, delivery, now, a, reason, plugins)
	if err != nil {
		return false, err
	}
	return s.writeAnswered(ctx, p)
}

// answeredRecord is a new bounty's record with its answer, encoded for
// writeAnswered.
type answeredRecord struct {
	k   string
	r   Record
	raw []byte
}

// prepareAnswered is putAnswered's part that writes nothing: a bounty that
// cannot be stored whole (errNotStorable) is known before its answer is
// posted.
func (s *JetStore) prepareAnswered(b Bounty, delivery string, now time.Time, a *Answer, reason string, plugins []engine.PluginResult) (answeredRecord, error) {
	r := Record{Bounty: b, State: StateOpen, ReceivedAt: now.UTC(), Answer: a, Reason: reason, Plugins: plugins}
	if delivery != "" {
		r.Deliveries = []string{delivery}
	}
	raw, err := encodeRecord(r)
	if err != nil {
		return answeredRecord{}, fmt.Errorf("store bounty %s: %w: %w", b, errNotStorable, err)
	}
	return answeredRecord{k: hexKey(b.Key()), r: r, raw: raw}, nil
}

// writeAnswered is putAnswered's write.
func (s *JetStore) writeAnswered(ctx context.Context, p answeredRecord) (created bool, err error) {
	if hold := s.answeredWriteHook.Load(); hold != nil {
		if err := (*hold)(ctx); err != nil {
			return false, fmt.Errorf("store bounty %s: %w", p.r.Bounty, err)
		}
	}
	var rev uint64
	err = s.node.Retry(ctx, permanent, func(ctx context.Context) error {
		s.writes.Add(1)
		var err error
		rev, err = s.createRecord(ctx, p.k, p.raw, p.r.Bounty.Expiration)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store bounty %s: %w", p.r.Bounty, err)
	}
	s.remember(p.k, p.r, rev)
	return true, nil
}

// noRecordHere reports that the records hold nothing for key, a bounty
// expiring at exp, when this engine can tell without a read: on the
// embedded node, the records' only writer, from what it knows it created
// and the horizon of what its earlier runs did (recordHorizon). False in
// a cluster, where another engine may have stored the bounty, and
// whenever it cannot tell.
func (s *JetStore) noRecordHere(key []byte, exp time.Time) bool {
	return s.horizon.absent(hexKey(key), exp)
}

// HoldAs names this engine in the claims it holds (a random name per
// process by default). An engine restarted on the same data directory
// (holderID) is the same holder: the claims its killed predecessor left
// are its own at once, as on the embedded node, instead of waiting out
// claimTTL — the 10 s in which a bounty caught mid-answer by the kill
// could expire unanswered. Call it before the store is used.
func (s *JetStore) HoldAs(id string) { s.self = id }

// RescueWithin lets this engine take over a bounty another engine still
// holds once it is within lead of its expiration (the scan deadline: the
// safety margin), the claim not lapsed: its holder is gone (a machine
// lost), or it would have answered by then. Without it such a bounty
// waited out the claim (10 s) and, shorter-lived, expired unanswered (3 of
// 300 bounties of 10 s at 30/s, one of 3 engines killed and not
// restarted). Taking over is safe: the answer is committed once, by
// compare-and-set, so a holder still alive and the rescuer post the same
// answer. Each claim is taken over once at most.
func (s *JetStore) RescueWithin(lead time.Duration) { s.rescueLead = lead }

// rescuable: o is within the rescue lead of its expiration, not past it
// (an expired bounty is its holder's to record, answered if its last POST
// went through: taken over, it would be recorded expired), and was not
// taken over before.
func (s *JetStore) rescuable(o openEntry, now time.Time) bool {
	return s.rescueLead > 0 && !o.Rescued && now.Before(o.Expiration) && !now.Before(o.Expiration.Add(-s.rescueLead))
}

// PreclaimStored makes Put store new bounties already taken by this engine
// (its workers process what its webhooks accept), saving Take a read and a
// write per bounty. A webhook-only engine leaves them to the workers.
func (s *JetStore) PreclaimStored(on bool) { s.preclaim = on }

// CommitAnswer records the answer of an open bounty, once, across every
// engine of the cluster.
func (s *JetStore) CommitAnswer(ctx context.Context, key []byte, a *Answer, reason string, plugins []engine.PluginResult) (*Answer, error) {
	var stored *Answer
	err := s.update(ctx, hexKey(key), func(r *Record) error {
		stored = nil
		if r.State != StateOpen {
			return ErrFinished
		}
		if r.Answer != nil {
			stored = r.Answer
			return errAlready
		}
		r.Answer, r.Reason, r.Plugins = a, reason, plugins
		return nil
	})
	if errors.Is(err, errAlready) {
		return stored, nil
	}
	if err != nil {
		return nil, fmt.Errorf("commit answer: %w", err)
	}
	return nil, nil
}

var errAlready = errors.New("already committed")

// Finish records how an open bounty ended, once, appends it to the audit
// stream and removes its open entry, in that order: an open entry left
// (a crash between the writes) says the audit may be missing.
func (s *JetStore) Finish(ctx context.Context, key []byte, o Outcome) (bool, error) {
	k := hexKey(key)
	done, seen := false, false
	var finished Record
	err := s.update(ctx, k, func(r *Record) error {
		done, seen = false, true
		if r.State != StateOpen {
			finished = *r
			return ErrFinished
		}
		o.applyTo(r)
		r.Audited = s.auditStream != nil
		finished, done = *r, true
		return nil
	})
	if err != nil && !errors.Is(err, ErrFinished) {
		return false, fmt.Errorf("record outcome: %w", err)
	}
	s.mu.Lock()
	entry, indexed := s.index[k]
	s.mu.Unlock()
	switch {
	case done, indexed && seen && finished.Audited:
		// Finished now, or before by a finish cut short (or another
		// engine's, under way: its duplicate is dropped).
		if err := s.appendAudit(ctx, k, finished); err != nil {
			return done, fmt.Errorf("record outcome: %w", err)
		}
	case indexed && !seen && !time.Now().Before(entry.Expiration.Add(s.grace)):
		// Its record outlived its grace while no engine ran: the key
		// still tells the bounty's id and phase.
		r := placeholderRecord(key, errors.New("its record was dropped after its expiration and grace"))
		r.Damaged = "finished after its record was dropped (its expiration and grace passed while no engine ran)"
		r.Bounty.Expiration = entry.Expiration
		o.applyTo(&r)
		if err := s.appendAudit(ctx, k, r); err != nil {
			return false, fmt.Errorf("record outcome: %w", err)
		}
	}
	// Finished now or before (a crash between the writes): the open
	// entry goes.
	if err := s.unindex(ctx, k); err != nil {
		return done, fmt.Errorf("record outcome: %w", err)
	}
	return done, nil
}

// unindex removes the open entry of k. One this engine has not seen (in
// its index, kept by the watcher) is not there, or was written by another
// engine moments ago: its purge would be a write for nothing (a marker)
// or be left to that engine's sweep, which unindexes a finished bounty.
func (s *JetStore) unindex(ctx context.Context, k string) error {
	s.mu.Lock()
	_, indexed := s.index[k]
	s.mu.Unlock()
	if indexed {
		err := s.node.Retry(ctx, permanent, func(ctx context.Context) error {
			s.writes.Add(1)
			if s.markerTTL {
				return s.open.Purge(ctx, k, jetstream.PurgeTTL(openMarkerTTL))
			}
			return s.open.Purge(ctx, k)
		})
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("unindex open bounty: %w", err)
		}
	}
	s.mu.Lock()
	delete(s.index, k)
	delete(s.preclaimed, k)
	s.mu.Unlock()
	return nil
}

// FinishAsync is Finish on its own goroutine.
func (s *JetStore) FinishAsync(key []byte, o Outcome, done func(bool, error)) {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		done(false, ErrStoreClosed)
		return
	}
	s.wg.Add(1)
	s.closeMu.Unlock()
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), queue.ElectionWait+5*time.Second)
		defer cancel()
		done(s.Finish(ctx, key, o))
	}()
}

// Get returns the stored record of a bounty key. A finished bounty still
// in the open index (a crash between Finish's writes) is unindexed.
func (s *JetStore) Get(key []byte) (Record, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queue.ElectionWait+5*time.Second)
	defer cancel()
	k := hexKey(key)
	if s.embedded {
		// The only engine writing records: the one it wrote last is the
		// stored one.
		if r, _, ok := s.recalled(k); ok {
			return r, true, nil
		}
	}
	r, _, ok, err := s.getRecord(ctx, k)
	if err != nil {
		return Record{}, false, err
	}
	if ok && r.State != StateOpen {
		s.mu.Lock()
		_, indexed := s.index[k]
		s.mu.Unlock()
		if indexed {
			if r.Audited {
				_ = s.appendAudit(ctx, k, r) // a finish cut short
			}
			_ = s.unindex(ctx, k)
		}
	}
	return r, ok, nil
}

// OpenKeysAfter calls fn for the open bounties no other engine holds,
// soonest expiration first, after the index entry after (from indexKey).
func (s *JetStore) OpenKeysAfter(after []byte, fn func(key []byte, expiration time.Time) bool) error {
	type item struct {
		idx []byte
		key []byte
		exp time.Time
	}
	now := time.Now()
	s.mu.Lock()
	items := make([]item, 0, len(s.index))
	for k, e := range s.index {
		if !s.embedded && e.Holder != "" && e.Holder != s.self && now.Before(e.Until) && !s.rescuable(e, now) {
			continue // another engine is on it
		}
		key, err := hex.DecodeString(k)
		if err != nil {
			continue
		}
		items = append(items, item{idx: indexKey(e.Expiration, key), key: key, exp: e.Expiration})
	}
	s.mu.Unlock()
	sort.Slice(items, func(i, j int) bool { return string(items[i].idx) < string(items[j].idx) })
	for _, it := range items {
		if after != nil && string(it.idx) <= string(after) {
			continue
		}
		if !fn(it.key, time.Unix(0, int64(indexTime(it.exp)))) {
			return nil
		}
	}
	return nil
}

// Take claims an open bounty for this engine. An embedded node has one
// engine: a claim left by its previous run (killed mid-scan) is taken over
// at once.
func (s *JetStore) Take(ctx context.Context, key []byte) (int, bool, error) {
	k := hexKey(key)
	s.mu.Lock()
	pre := s.preclaimed[k]
	delete(s.preclaimed, k)
	s.mu.Unlock()
	if pre {
		return 1, true, nil // stored taken by Put, moments ago
	}
	return s.claim(ctx, k, true)
}

// Renew extends this engine's claim.
func (s *JetStore) Renew(ctx context.Context, key []byte) error {
	_, ok, err := s.claim(ctx, hexKey(key), false)
	if err == nil && !ok {
		return errHeld
	}
	return err
}

// RenewEvery is a third of the claim's life.
func (s *JetStore) RenewEvery() time.Duration { return s.claimTTL / 3 }

func (s *JetStore) claim(ctx context.Context, k string, take bool) (int, bool, error) {
	for {
		e, err := s.get(ctx, s.open, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			// Finished meanwhile; its purge marker may have gone before
			// the watcher saw it.
			s.mu.Lock()
			delete(s.index, k)
			s.mu.Unlock()
			return 0, false, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("claim bounty: %w", err)
		}
		var o openEntry
		if err := json.Unmarshal(e.Value(), &o); err != nil {
			return 0, false, fmt.Errorf("claim bounty: decode its open entry: %w", err)
		}
		now := time.Now()
		mine := o.Holder == s.self
		held := !mine && !s.embedded && o.Holder != "" && now.Before(o.Until)
		if held && !(take && s.rescuable(o, now)) {
			return o.Takes, false, nil
		}
		if !take && !mine {
			return o.Takes, false, nil
		}
		if take {
			if held {
				s.log.Warn("taking over a bounty at its deadline from the engine that holds it unfinished", "key", k, "holder", o.Holder)
			}
			o.Takes++
			o.Rescued = held
		}
		o.Holder, o.Until = s.self, now.Add(s.claimTTL)
		raw, _ := json.Marshal(o)
		err = s.node.Retry(ctx, permanent, func(ctx context.Context) error {
			s.writes.Add(1)
			_, err := s.open.Update(ctx, k, raw, e.Revision())
			return err
		})
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("claim bounty: %w", err)
		}
		s.apply(localEntry(k, raw), false)
		return o.Takes, true, nil
	}
}

// List calls fn for every stored bounty: newest first, the open ones (in
// id order: keys are the big-endian id, hex-encoded, so they sort the
// same), then the finished ones from the audit stream, the most recently
// finished first, then those an older version finished (kept in the
// records bucket until their retention ends); oldest first, the other
// way round.
func (s *JetStore) List(newestFirst bool, fn func(Record) bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	groups := []func() (bool, error){
		func() (bool, error) { return s.listOpen(ctx, newestFirst, fn) },
		func() (bool, error) { return s.listAudit(ctx, newestFirst, fn) },
	}
	if s.legacyMayExist(ctx) {
		groups = append(groups, func() (bool, error) { return s.listLegacy(ctx, newestFirst, fn) })
	}
	if !newestFirst {
		slices.Reverse(groups)
	}
	for _, g := range groups {
		more, err := g()
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// listOpen lists the open bounties, found by the open index.
func (s *JetStore) listOpen(ctx context.Context, newestFirst bool, fn func(Record) bool) (bool, error) {
	s.mu.Lock()
	keys := make([]string, 0, len(s.index))
	for k := range s.index {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	// One finished meanwhile is listed with the finished.
	return s.listRecords(ctx, keys, newestFirst, func(r Record) bool { return r.State == StateOpen }, fn)
}

// listLegacy lists the finished bounties of the records bucket that are
// in no audit stream (finished by an older version, or moved from
// bounties.db), in id order: every record is read.
func (s *JetStore) listLegacy(ctx context.Context, newestFirst bool, fn func(Record) bool) (bool, error) {
	lister, err := s.records.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return true, nil
		}
		return false, fmt.Errorf("list bounties: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	// The open ones are listed with the open, the audited from the
	// audit stream.
	return s.listRecords(ctx, keys, newestFirst, func(r Record) bool { return r.State != StateOpen && !r.Audited }, fn)
}

// listRecords reads the records of keys in id order (newest first when
// asked) and gives fn those keep holds of, until fn returns false. A
// record gone meanwhile (finished, pruned) is skipped; a damaged one is
// listed as such.
func (s *JetStore) listRecords(ctx context.Context, keys []string, newestFirst bool, keep, fn func(Record) bool) (bool, error) {
	sort.Strings(keys)
	if newestFirst {
		slices.Reverse(keys)
	}
	for _, k := range keys {
		r, _, ok, err := s.getRecord(ctx, k)
		if !ok && err == nil {
			continue
		}
		if err != nil && r.Damaged == "" {
			return false, err
		}
		if !keep(r) {
			continue
		}
		if !fn(r) {
			return false, nil
		}
	}
	return true, nil
}

// Counts returns how many stored bounties are in each state.
func (s *JetStore) Counts() (map[State]int, error) {
	counts := map[State]int{}
	err := s.List(false, func(r Record) bool { counts[r.State]++; return true })
	return counts, err
}

// Close waits for outcomes being recorded, stops the watcher and closes
// the connection (and the embedded node).
func (s *JetStore) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	if s.watcher != nil {
		_ = s.watcher.Stop()
	}
	s.wg.Wait()
	return s.node.Close()
}

// localEntry stands for an entry this engine just wrote, applied to the
// index at once instead of when the watcher brings it back.
func localEntry(k string, v []byte) jetstream.KeyValueEntry { return &written{key: k, value: v} }

type written struct {
	jetstream.KeyValueEntry
	key   string
	value []byte
}

func (w *written) Key() string                     { return w.key }
func (w *written) Value() []byte                   { return w.value }
func (w *written) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }
