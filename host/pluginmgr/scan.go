package pluginmgr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/microengine/microengine/shared"
)

// CrashError answers an artifact that crashed its plugin twice: once
// (perhaps among other scans), and again when it was retried alone on the
// relaunched process. It is not retried further; the engine answers
// unknown, and the other artifacts keep their own verdicts.
type CrashError struct {
	Plugin string
	// Report is the crash's one-line form: the runtime's first line and
	// the failing frame, "panic: assignment to entry in nil map (main.go:89)".
	Report string
	Err    error
}

func (e *CrashError) Error() string {
	return fmt.Sprintf("%s crashed on this artifact: %s", e.Plugin, e.Report)
}

func (e *CrashError) Unwrap() error { return e.Err }

// exitWait bounds how long a scan that failed at the transport waits to
// learn whether the process died (go-plugin reaps it within milliseconds
// of the connection breaking: it only drains the process's stderr first).
const exitWait = 2 * time.Second

// Scan runs one scan on the current process. While the plugin is being
// relaunched it waits (within ctx and Options.WaitForPlugin) rather than
// failing at once. When the process dies under the scan, the scan is
// retried once, alone, on the relaunched process: one artifact that kills
// the plugin must not cost the verdicts of the others that were in flight,
// and a second crash names the culprit for certain (a CrashError). A
// plugin that stays down gives an error, which the engine turns into
// unknown, never benign.
func (s *slot) Scan(ctx context.Context, a shared.Artifact) (shared.Result, error) {
	first := s.try(ctx, a, false)
	if !first.died {
		return first.res, first.err
	}
	report := first.inst.exitReport()
	if a.Content != nil {
		seeker, ok := a.Content.(io.Seeker)
		if !ok {
			return shared.Result{}, fmt.Errorf("plugin %s (pid %d) crashed during the scan (%s), and the content cannot be re-read for a retry: %w",
				s.name, first.inst.pid, report, first.err)
		}
		if _, err := seeker.Seek(0, io.SeekStart); err != nil {
			return shared.Result{}, fmt.Errorf("plugin %s (pid %d) crashed during the scan (%s); rewind the content for a retry: %w",
				s.name, first.inst.pid, report, err)
		}
	}
	// The dead process (or its backend) may have moved the offset of the
	// descriptor it was handed: the retry gets one of its own.
	a.FileExclusive = false
	s.metrics.crashRetries.WithLabelValues(s.name).Inc()
	s.log.Warn("plugin crashed during a scan; retrying the scan alone on the relaunched process",
		"artifact", a.ID, "pid", first.inst.pid, "crash", report)
	retry := s.try(ctx, a, true)
	if !retry.died {
		return retry.res, retry.err
	}
	s.metrics.crashedArtifacts.WithLabelValues(s.name).Inc()
	cerr := &CrashError{Plugin: s.name, Report: retry.inst.exitReport(), Err: retry.err}
	s.log.Error("plugin crashed again on the same artifact; it is answered unknown and not retried",
		"artifact", a.ID, "pid", retry.inst.pid, "crash", cerr.Report)
	return shared.Result{}, cerr
}

// attempt is one try of a scan on one process.
type attempt struct {
	res  shared.Result
	err  error
	inst *instance // nil when no process could be had
	died bool      // the process died under the scan
}

// try runs the scan once, sharing the process with other scans or, for a
// retry, alone. It holds its place at the gate until it knows whether the
// process died, so a retry queued behind it never starts on a process
// about to be found dead.
func (s *slot) try(ctx context.Context, a shared.Artifact, alone bool) attempt {
	if err := s.gate.enter(ctx, alone); err != nil {
		return attempt{err: fmt.Errorf("plugin %s: waiting behind a scan retried after a crash: %w", s.name, err)}
	}
	defer s.gate.leave(alone)
	inst, err := s.acquire(ctx)
	if err != nil {
		return attempt{err: err}
	}
	defer inst.release()
	if alone {
		inst.isolated.Store(true)
	}
	res, err := inst.scanner.Scan(ctx, a)
	died := err != nil && s.diedUnder(ctx, inst, err)
	if alone && !died {
		// Only a death during the retry is the retried artifact's.
		inst.isolated.Store(false)
	}
	if died {
		s.poke()
		err = fmt.Errorf("plugin %s (pid %d) died during the scan: %w", s.name, inst.pid, err)
	}
	return attempt{res: res, err: err, inst: inst, died: died}
}

// diedUnder reports whether a failed scan failed because its process died.
// A scan whose own context ended is a timeout or a cancellation, whatever
// the process did meanwhile.
func (s *slot) diedUnder(ctx context.Context, inst *instance, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if !errors.Is(err, shared.ErrPluginUnavailable) && !inst.client.Exited() {
		return false // the plugin answered with an error: it is alive
	}
	return inst.waitExit(ctx, exitWait)
}

// acquire returns the current process, counted in. While the plugin is
// being relaunched it waits, within ctx: a relaunch takes tens of
// milliseconds, and failing at once would cost verdicts a crash had no
// part in. Only while relaunches are held back (backoff) does it give up
// after Options.WaitForPlugin.
func (s *slot) acquire(ctx context.Context) (*instance, error) {
	var giveUp *time.Timer
	defer func() {
		if giveUp != nil {
			giveUp.Stop()
		}
	}()
	for {
		s.mu.Lock()
		cur, ready, lastErr, backoffUntil, closed := s.cur, s.ready, s.lastErr, s.backoffUntil, s.closed
		s.mu.Unlock()
		if cur != nil && !cur.client.Exited() && cur.acquire() {
			return cur, nil
		}
		if closed {
			return nil, fmt.Errorf("plugin %s was removed or the engine is stopping: %w", s.name, shared.ErrPluginUnavailable)
		}
		if cur != nil && cur.client.Exited() {
			s.poke()
		}
		var expired <-chan time.Time
		if time.Now().Before(backoffUntil) {
			if giveUp == nil {
				giveUp = time.NewTimer(s.opts.WaitForPlugin)
			}
			expired = giveUp.C
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("plugin %s is unavailable (%s): %w", s.name, lastErrOr(lastErr), ctx.Err())
		case <-expired:
			return nil, fmt.Errorf("plugin %s is unavailable: %s: %w", s.name, lastErrOr(lastErr), shared.ErrPluginUnavailable)
		}
	}
}

// poke asks the supervisor to look at the process now rather than at its
// next poll.
func (s *slot) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func lastErrOr(s string) string {
	if s == "" {
		return "starting"
	}
	return s
}
