package marketplace

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The embedded node's knowledge of which bounties have a record, kept in
// memory so a new bounty answered from the verdict cache is known new
// without reading the records stream: a read there waits for the
// stream's writes, fsync included, as the filestore holds its lock
// across them (measured on the embedded node with 500 bounties/s being
// written: a read's p90 1.4-2.7 ms and p99 17-24 ms on a loaded
// machine, against 0.05 and 0.1-0.14 ms with no writes).
//
// This engine is the embedded node's only writer, so it knows every
// record it creates (known, until its bounty expires). The records an
// earlier run created are known by their horizon: the latest expiration
// any of them may have, kept in horizonFile beside the node's files and
// raised, fsynced, before a record expiring after it is created. A bounty
// expiring after both horizons and not in known has no record.
type recordHorizon struct {
	path string // "" on a cluster: nothing is known without a read

	mu sync.Mutex
	// known: the records created by this run, by key, with their
	// bounties' expirations.
	known map[string]time.Time
	swept time.Time
	// before: no record of an earlier run expires after it.
	before time.Time
	// dropped: no record this run created and no longer keeps in known
	// expires after it.
	dropped time.Time
	// saved is the horizon in the file.
	saved time.Time
}

// horizonFile holds the records' horizon in the embedded node's folder.
const horizonFile = "records.horizon"

// horizonStep is how far past a new record's expiration the horizon is
// raised, so it is written once in that long, not for every record.
const horizonStep = 10 * time.Minute

// maxKnown bounds the records known by key: 500/s of bounties living 2
// minutes. Past it a record is not kept and raises dropped instead: the
// bounties expiring before it are then written before they are answered.
const maxKnown = 1 << 16

// loadHorizon reads the horizon of the records the embedded node's
// earlier runs created. Without a file, a store holding records (written
// by a version before the file) may hold any expiration up to
// maxBountyLifetime from now.
func loadHorizon(dir string, hasRecords bool, now time.Time) (*recordHorizon, error) {
	h := &recordHorizon{known: map[string]time.Time{}}
	if dir == "" {
		return h, nil
	}
	h.path = filepath.Join(dir, horizonFile)
	raw, err := os.ReadFile(h.path)
	switch {
	case err == nil:
		t, perr := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(raw)))
		if perr != nil {
			// Unreadable: as if the file were missing with records.
			t = now.Add(maxBountyLifetime)
			if err := h.save(t); err != nil {
				return nil, err
			}
		}
		h.before, h.saved = t, t
	case os.IsNotExist(err):
		if hasRecords {
			h.before, h.saved = now.Add(maxBountyLifetime), time.Time{}
			if err := h.save(h.before); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("read the records' horizon: %w", err)
	}
	return h, nil
}

// save writes t as the horizon, durably, before it returns.
func (h *recordHorizon) save(t time.Time) error {
	tmp := h.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("save the records' horizon: %w", err)
	}
	_, err = f.WriteString(t.UTC().Format(time.RFC3339Nano) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, h.path)
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(filepath.Dir(h.path)); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("save the records' horizon: %w", err)
	}
	h.saved = t
	return nil
}

// note records that the record of k, its bounty expiring at exp, is about
// to be created: known from now on, and covered by the saved horizon
// before the write. Called before every creation of a record.
func (h *recordHorizon) note(k string, exp time.Time) error {
	if h.path == "" {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if exp.After(h.saved) {
		if err := h.save(exp.Add(horizonStep)); err != nil {
			return err
		}
	}
	h.sweepLocked(time.Now())
	if _, ok := h.known[k]; ok || len(h.known) < maxKnown {
		if old, ok := h.known[k]; !ok || exp.After(old) {
			h.known[k] = exp
		}
		return nil
	}
	if exp.After(h.dropped) {
		h.dropped = exp
	}
	return nil
}

// sweepLocked drops the known records whose bounties expired (no
// redelivery of those is answered from the cache), at most once a
// second: known holds the bounties of their lifetime (5,000 at 500/s
// living 10 s), not maxKnown.
func (h *recordHorizon) sweepLocked(now time.Time) {
	if now.Sub(h.swept) < recentSweepEvery {
		return
	}
	h.swept = now
	for k, exp := range h.known {
		if !now.Before(exp) {
			delete(h.known, k)
			if exp.After(h.dropped) {
				h.dropped = exp
			}
		}
	}
}

// absent reports that no record of k exists, for a bounty expiring at
// exp: known without a read only on the embedded node.
func (h *recordHorizon) absent(k string, exp time.Time) bool {
	if h.path == "" {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !exp.After(h.before) || !exp.After(h.dropped) {
		return false
	}
	_, ok := h.known[k]
	return !ok
}

// openHorizon loads the records' horizon of the embedded node (on a
// cluster's, it knows nothing).
func (s *JetStore) openHorizon(ctx context.Context) error {
	if !s.embedded {
		s.horizon = &recordHorizon{}
		return nil
	}
	st, err := s.records.Status(ctx)
	if err != nil {
		return fmt.Errorf("read the records' status: %w", err)
	}
	h, err := loadHorizon(s.node.Dir(), st.Values() > 0, time.Now())
	if err != nil {
		return err
	}
	s.horizon = h
	return nil
}
