package scanner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/microengine/microengine/plugins/yara/rules"
)

// reloadStatus is what Health reports about hot reloads.
type reloadStatus struct {
	mu        sync.Mutex
	ok        int
	failed    int
	lastErr   string
	lastErrAt time.Time
	// failedStamps are the sources of the last failed attempt: the same
	// files are not compiled again until they change.
	failedStamps map[string]rules.Stamp
}

func (r *reloadStatus) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ok, r.failed, r.lastErr, r.lastErrAt, r.failedStamps = 0, 0, "", time.Time{}, nil
}

// failure is the last reload failure, "" when the set in use is the latest.
func (r *reloadStatus) failure() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastErr == "" {
		return ""
	}
	return fmt.Sprintf("RELOAD FAILED at %s, serving the previous set: %s", r.lastErrAt.UTC().Format(time.RFC3339), r.lastErr)
}

func (r *reloadStatus) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok
}

// watch checks the rule files every interval until ctx ends. Polling
// stamps (modification time and size of each file and directory) finds
// edits, new files and deletions in recursive directories alike, which
// per-directory inotify watches make fiddly; a few thousand stats every
// few seconds cost next to nothing.
func (s *Scanner) watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Reload()
		}
	}
}

// ErrUnchanged is Reload's answer when the rule files have not changed.
var ErrUnchanged = errors.New("rule files unchanged")

// Reload compiles the rule files again if they changed since the current
// set was loaded, and swaps the new set in whole. It keeps the current set
// (and reports why) when the new one fails: a load error, or a file that
// compiled before and fails now (in a non-strict set the file would
// otherwise vanish silently from detection). It returns ErrUnchanged when
// there was nothing to do.
func (s *Scanner) Reload() error {
	s.configMu.Lock()
	defer s.configMu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return errors.New("not configured")
	}
	if !s.changed(cur) {
		return ErrUnchanged
	}
	set, err := rules.Load(cur.spec())
	if err == nil {
		err = regression(cur.set, set)
	}
	if err != nil {
		_, _, stamps, _ := rules.Resolve(cur.cfg.Rules)
		if stamps == nil {
			stamps = map[string]rules.Stamp{} // a path vanished
		}
		s.reloads.mu.Lock()
		s.logFailure(err)
		s.reloads.failed++
		s.reloads.lastErr, s.reloads.lastErrAt = failureMessage(err), time.Now()
		s.reloads.failedStamps = stamps
		s.reloads.mu.Unlock()
		s.log.Error("rules reload failed: the previous set keeps serving", "error", failureMessage(err), "signatures_version", cur.set.Version())
		return err
	}
	s.cur.Store(newState(cur.cfg, set))
	cur.retire()
	s.reloads.mu.Lock()
	s.reloads.ok++
	s.reloads.lastErr, s.reloads.failedStamps = "", nil
	s.reloads.mu.Unlock()
	s.logSet("rules reloaded", set)
	return nil
}

// changed reports whether the files behind st differ from when it was
// loaded, and from the last failed attempt.
func (s *Scanner) changed(st *state) bool {
	_, _, stamps, err := rules.Resolve(st.cfg.Rules)
	if err != nil {
		// A path that vanished is a change (Reload then reports it).
		s.reloads.mu.Lock()
		defer s.reloads.mu.Unlock()
		return s.reloads.failedStamps == nil
	}
	if maps.Equal(stamps, st.set.Sources) {
		return false
	}
	s.reloads.mu.Lock()
	defer s.reloads.mu.Unlock()
	return !maps.Equal(stamps, s.reloads.failedStamps)
}

// regression refuses a new set that lost a file the old one loaded.
func regression(old, next *rules.Set) error {
	loaded := map[string]bool{}
	for _, f := range old.Files {
		loaded[f] = true
	}
	var lost []rules.Skipped
	for _, sk := range next.Skipped {
		if loaded[sk.File] {
			lost = append(lost, sk)
		}
	}
	if len(lost) > 0 {
		return &rules.Error{Files: lost, Reason: "a rule file that loaded before fails now"}
	}
	return nil
}

// failureMessage says why a load failed, quoting the first few compile
// errors (logFailure logs them all): a public collection can fail with
// hundreds, and the message shows in Health.
func failureMessage(err error) string {
	var re *rules.Error
	if !errors.As(err, &re) {
		return err.Error()
	}
	var parts []string
	idx := slices.Sorted(maps.Keys(re.Paths))
	for _, i := range idx {
		parts = append(parts, fmt.Sprintf("rules[%d]: %s", i, re.Paths[i]))
	}
	errs := strings.Join(quoteErrors(re.Files), "; ")
	switch {
	case re.Reason != "" && errs != "":
		parts = append(parts, re.Reason+": "+errs)
	case re.Reason != "":
		parts = append(parts, re.Reason)
	case errs != "":
		parts = append(parts, errs)
	}
	return strings.Join(parts, "; ")
}
