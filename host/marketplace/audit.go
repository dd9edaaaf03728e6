package marketplace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/queue"
)

// The audit trail is a stream of finished bounties under one subject,
// kept for the retention, apart from the records bucket. JetStream keeps
// an in-memory index entry for every subject of a stream (78 B per key
// of the records bucket, 172 B while its block's subject state is
// loaded, measured on 100,000 records): a record per bounty kept for the
// retention cost ~440 B of RSS a bounty, ~9 GB at 200/s for 7 days. One
// subject costs the same whatever the messages under it, so what the
// engine holds no longer grows with the retention: the records bucket
// keeps a bounty only while it can still be acted on (recordGrace).
const (
	streamAudit  = "microengine_audit"
	subjectAudit = "microengine.audit"
	// auditDuplicates covers a write's retries (12 s through an
	// election) and two engines finishing one bounty at once.
	auditDuplicates = 30 * time.Second
)

// recordGrace is how long a bounty's record is kept after its expiration
// unless record_grace says otherwise. A record is what recognises a
// redelivery (never answered twice nor differently) and what resumes an
// open bounty; after the expiration nothing is posted for a bounty, but
// the marketplace's clock and ours may disagree, and a redelivery may be
// queued behind a marketplace's outage: an hour covers both with room.
// Its outcome stays in the audit stream for the retention.
const recordGrace = config.DefaultRecordGrace

// recordsStreamConfig is the records bucket's stream as nats.go makes a
// key-value bucket (CreateOrUpdateKeyValue), with per-message TTLs
// allowed: nats.go allows them only with LimitMarkerTTL, which would add
// a marker per bounty when its record goes (a write, and an index entry
// for the marker's life).
func recordsStreamConfig(maxAge time.Duration, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              "KV_" + bucketRecords,
		Description:       "microengine bounties while they can be acted on",
		Subjects:          []string{"$KV." + bucketRecords + ".>"},
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		MaxAge:            maxAge,
		MaxMsgSize:        -1,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		AllowDirect:       true,
		Discard:           jetstream.DiscardNew,
		AllowMsgTTL:       true,
	}
}

// auditStreamConfig is the audit stream's.
func auditStreamConfig(retention time.Duration, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        streamAudit,
		Description: "microengine finished bounties, the audit trail",
		Subjects:    []string{subjectAudit},
		MaxAge:      retention,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Discard:     jetstream.DiscardOld,
		// Finishes retried (a leader election, two engines mending one
		// cut short) within this are stored once (by message id). The
		// node keeps every id of the window in memory (~140 B each in
		// a heap profile): 30 s of ids, not the default 2 minutes.
		Duplicates:  min(auditDuplicates, retention),
		AllowDirect: true,
	}
}

// openAudit creates or updates the records bucket and the audit
// stream (retention > 0), or binds them as they are (retention 0: for
// reading; a store without an audit stream yet has none).
func (s *JetStore) openAudit(ctx context.Context, retention time.Duration) error {
	node := s.node
	// Records written before per-message TTLs (an older version's, or
	// one moved from bounties.db) have none: the bucket keeps them the
	// retention, as that version did, so an upgrade loses none of them.
	recordAge := max(retention, maxBountyLifetime+s.grace)
	s.recordAge = recordAge
	if retention > 0 {
		meta, err := s.legacyMeta(ctx, recordAge)
		if err != nil {
			return err
		}
		var level int
		err = node.Retry(ctx, apiRefused, func(ctx context.Context) error {
			info, err := node.JS.AccountInfo(ctx)
			if err == nil {
				level = info.API.Level
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("ask JetStream its API level: %w", err)
		}
		s.recordTTL = level >= 1 // nats-server 2.11+
		if s.recordTTL {
			err = node.RetryStart(ctx, apiRefused, func(ctx context.Context) error {
				_, err := node.JS.CreateOrUpdateStream(ctx, recordsStreamConfig(recordAge, node.Replicas))
				return err
			})
		} else {
			s.log.Warn("JetStream is older than nats-server 2.11 (no per-message TTL): bounty records are kept the whole retention, and its memory grows with it",
				"retention", retention)
			err = node.RetryStart(ctx, apiRefused, func(ctx context.Context) error {
				_, err := node.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
					Bucket: bucketRecords, Description: "microengine bounties and their audit trail",
					TTL: recordAge, Storage: jetstream.FileStorage, Replicas: node.Replicas, History: 1,
				})
				return err
			})
		}
		if err != nil {
			return fmt.Errorf("create the JetStream bucket %s: %w", bucketRecords, err)
		}
		err = node.RetryStart(ctx, apiRefused, func(ctx context.Context) error {
			var err error
			cfg := auditStreamConfig(retention, node.Replicas)
			cfg.Metadata = meta
			s.auditStream, err = node.JS.CreateOrUpdateStream(ctx, cfg)
			return err
		})
		if err != nil {
			return fmt.Errorf("create the JetStream stream %s: %w", streamAudit, err)
		}
	} else {
		streamMissing := func(err error) bool { return errors.Is(err, jetstream.ErrStreamNotFound) }
		err := node.Retry(ctx, streamMissing, func(ctx context.Context) error {
			var err error
			s.auditStream, err = node.JS.Stream(ctx, streamAudit)
			return err
		})
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s.auditStream = nil // written by a version without one
		} else if err != nil {
			return fmt.Errorf("open the JetStream stream %s: %w", streamAudit, err)
		}
	}
	err := node.Retry(ctx, bucketMissing, func(ctx context.Context) error {
		var err error
		s.records, err = node.JS.KeyValue(ctx, bucketRecords)
		return err
	})
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("no bounties stored in JetStream yet (bucket %s): %w", bucketRecords, err)
	}
	if err != nil {
		return fmt.Errorf("open the JetStream bucket %s: %w", bucketRecords, err)
	}
	return nil
}

// recordTTLFor is how long a record of a bounty expiring at exp is kept
// from now: until its expiration and the grace after it, in whole seconds
// rounded up (JetStream truncates a TTL to its seconds: the record would
// go up to a second early).
func (s *JetStore) recordTTLFor(exp time.Time) time.Duration {
	return (max(time.Until(exp), 0) + s.grace + time.Second - 1).Truncate(time.Second)
}

// createRecord writes the first record of k, kept until its bounty's
// expiration and the grace.
func (s *JetStore) createRecord(ctx context.Context, k string, raw []byte, exp time.Time) (uint64, error) {
	if err := s.horizon.note(k, exp); err != nil {
		return 0, err
	}
	if !s.recordTTL {
		return s.records.Create(ctx, k, raw)
	}
	return s.records.Create(ctx, k, raw, jetstream.KeyTTL(s.recordTTLFor(exp)))
}

// updateRecord replaces the record of k at revision rev (compare-and-set),
// its TTL set again: with one message per key, the new one replaces the
// old and its TTL with it. nats.go's Update takes no TTL: this is its
// publish with one. A legacy record (finished and in no audit stream)
// keeps none: it is the audit trail, kept the bucket's MaxAge.
func (s *JetStore) updateRecord(ctx context.Context, k string, raw []byte, rev uint64, exp time.Time, legacy bool) (uint64, error) {
	if !s.recordTTL || legacy {
		return s.records.Update(ctx, k, raw, rev)
	}
	m := &nats.Msg{Subject: "$KV." + bucketRecords + "." + k, Data: raw, Header: nats.Header{}}
	ack, err := s.node.JS.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev),
		jetstream.WithMsgTTL(s.recordTTLFor(exp)))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: %w", err, jetstream.ErrKeyRevisionMismatch)
		}
		return 0, err
	}
	return ack.Sequence, nil
}

// appendAudit adds a finished bounty to the audit stream. Appended again
// (a retry, another engine mending the same finish) within the stream's
// duplicate window, it is stored once.
func (s *JetStore) appendAudit(ctx context.Context, k string, r Record) error {
	if s.auditStream == nil {
		return nil
	}
	r.Audited = false
	raw, err := encodeRecord(r)
	if err != nil {
		return fmt.Errorf("audit bounty: %w", err)
	}
	id := k + "@" + strconv.FormatInt(r.FinishedAt.UnixNano(), 10)
	err = s.node.Retry(ctx, permanent, func(ctx context.Context) error {
		s.writes.Add(1)
		_, err := s.node.JS.PublishMsg(ctx, &nats.Msg{Subject: subjectAudit, Data: raw}, jetstream.WithMsgID(id))
		return err
	})
	if err != nil {
		return fmt.Errorf("audit bounty: %w", err)
	}
	return nil
}

// listAudit calls fn for the finished bounties of the audit stream, the
// most recently finished first (or last), until fn returns false; more
// is false then.
func (s *JetStore) listAudit(ctx context.Context, newestFirst bool, fn func(Record) bool) (more bool, err error) {
	if s.auditStream == nil {
		return true, nil
	}
	info, err := s.auditStream.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("list audited bounties: %w", err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return true, nil
	}
	seq, step := first, uint64(1)
	if newestFirst {
		seq, step = last, ^uint64(0) // -1
	}
	for ; seq >= first && seq <= last && seq != 0; seq += step {
		var m *jetstream.RawStreamMsg
		err := s.node.Retry(ctx, func(err error) bool { return errors.Is(err, jetstream.ErrMsgNotFound) }, func(ctx context.Context) error {
			s.reads.Add(1)
			var err error
			m, err = s.auditStream.GetMsg(ctx, seq)
			return err
		})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // aged out meanwhile
		}
		if err != nil {
			return false, fmt.Errorf("list audited bounties: %w", err)
		}
		var r Record
		if err := json.Unmarshal(m.Data, &r); err != nil {
			r = Record{State: StateFailed, Damaged: "the audited record cannot be read: " + err.Error()}
		}
		if !fn(r) {
			return false, nil
		}
	}
	return true, nil
}

// apiRefused: JetStream refused the request itself (a config it will not
// take); anything else (no leader yet, a timeout) is worth retrying. A
// refusal to place the replicas ("no suitable peers for placement", a 400)
// is a cluster still forming: retried too, within the start's bound.
func apiRefused(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code != 503 && !queue.Unplaced(err)
}

// metaLegacyUntil, in the audit stream's metadata, is until when the
// records bucket may hold finished bounties in no audit stream: those
// of the version before it (the bucket keeps them the retention), or
// moved from bounties.db. Until then, listing reads the whole bucket for
// them; after, the open index and the audit stream are all there is.
const metaLegacyUntil = "microengine_legacy_until"

// legacyMeta is the audit stream's metadata: kept from the stream there
// is, or, when it is made now beside a records bucket that holds
// bounties already (an upgrade), until when those may stay.
func (s *JetStore) legacyMeta(ctx context.Context, recordAge time.Duration) (map[string]string, error) {
	notFound := func(err error) bool { return errors.Is(err, jetstream.ErrStreamNotFound) || apiRefused(err) }
	var audit, records jetstream.Stream
	err := s.node.Retry(ctx, notFound, func(ctx context.Context) error {
		var err error
		audit, err = s.node.JS.Stream(ctx, streamAudit)
		return err
	})
	switch {
	case err == nil:
		if v := audit.CachedInfo().Config.Metadata[metaLegacyUntil]; v != "" {
			return map[string]string{metaLegacyUntil: v}, nil
		}
		return nil, nil
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("open the JetStream stream %s: %w", streamAudit, err)
	}
	err = s.node.Retry(ctx, notFound, func(ctx context.Context) error {
		var err error
		records, err = s.node.JS.Stream(ctx, "KV_"+bucketRecords)
		return err
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open the JetStream bucket %s: %w", bucketRecords, err)
	}
	if records.CachedInfo().State.Msgs == 0 {
		return nil, nil
	}
	return map[string]string{metaLegacyUntil: time.Now().Add(recordAge).UTC().Format(time.RFC3339)}, nil
}

// noteLegacy records that finished bounties in no audit stream were
// written now (moved from bounties.db): they stay the bucket's MaxAge.
func (s *JetStore) noteLegacy(ctx context.Context) error {
	if s.auditStream == nil {
		return nil
	}
	info, err := s.auditStream.Info(ctx)
	if err != nil {
		return fmt.Errorf("read the JetStream stream %s: %w", streamAudit, err)
	}
	cfg := info.Config
	until := time.Now().Add(s.recordAge).UTC().Format(time.RFC3339)
	if v := cfg.Metadata[metaLegacyUntil]; v >= until {
		return nil
	}
	cfg.Metadata = map[string]string{metaLegacyUntil: until}
	return s.node.Retry(ctx, apiRefused, func(ctx context.Context) error {
		_, err := s.node.JS.UpdateStream(ctx, cfg)
		return err
	})
}

// legacyMayExist says whether the records bucket may hold finished
// bounties in no audit stream.
func (s *JetStore) legacyMayExist(ctx context.Context) bool {
	if s.auditStream == nil {
		return true
	}
	if info, err := s.auditStream.Info(ctx); err == nil {
		v := info.Config.Metadata[metaLegacyUntil]
		if v == "" {
			return false
		}
		t, err := time.Parse(time.RFC3339, v)
		return err != nil || time.Now().Before(t)
	}
	return true
}
