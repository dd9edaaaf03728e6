package devclamd

import (
	"context"
	"errors"
	"testing"
	"time"
)

// StartT starts a private clamd for a test and stops it when the test ends.
// It never skips: a machine without clamd fails the test with the command
// that installs it, so a missing daemon cannot quietly turn into a green
// run. Options.Dir defaults to a folder under t.TempDir().
func StartT(t testing.TB, opts Options) *Daemon {
	t.Helper()
	if opts.Clamd == "" {
		if _, err := FindClamd(); err != nil {
			t.Fatalf("clamd is required for this test and was not found; install it with:\n\t%s", InstallCommand)
		}
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	ctx := context.Background()
	if dl, ok := deadline(t); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	d, err := Start(ctx, opts)
	if errors.Is(err, ErrNotInstalled) {
		t.Fatalf("clamd is required for this test and was not found; install it with:\n\t%s", InstallCommand)
	}
	if err != nil {
		t.Fatalf("start private clamd: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop private clamd: %v", err)
		}
	})
	return d
}

// deadline is the test binary's -timeout deadline, for *testing.T only.
func deadline(t testing.TB) (deadline time.Time, ok bool) {
	if dt, is := t.(interface{ Deadline() (time.Time, bool) }); is {
		return dt.Deadline()
	}
	return time.Time{}, false
}
