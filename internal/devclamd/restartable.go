package devclamd

import (
	"context"
	"os"
	"sync"
	"testing"
)

// Restartable is a private clamd that a test may kill and start again
// while scans run. Every daemon it starts uses the same work folder, a
// short one of its own under the temporary folder (a unix socket path
// holds at most 108 bytes; t.TempDir's nest too deep), so the restarted
// clamd listens on the address the clients were given.
//
// The lock is there because scans, or the test's own checks, read the
// current daemon while the test restarts clamd.
type Restartable struct {
	opts Options
	mu   sync.Mutex
	d    *Daemon
}

// StartRestartable starts a private clamd on opts (Dir is set to the
// shared work folder) and stops it, and removes the folder, when the test
// ends. ctx bounds each start.
func StartRestartable(t testing.TB, ctx context.Context, opts Options) *Restartable {
	t.Helper()
	work, err := os.MkdirTemp("", "microengine-churn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	opts.Dir = work
	r := &Restartable{opts: opts}
	if r.d, err = Start(ctx, opts); err != nil {
		t.Fatalf("start private clamd: %v", err)
	}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.d.Stop()
	})
	return r
}

// Current is the daemon running now (or the last one killed, if its
// restart failed).
func (r *Restartable) Current() *Daemon {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.d
}

// Restart kills clamd, as a crash would, and starts a new one on the same
// socket. If the new one does not start, Current stays the killed daemon.
func (r *Restartable) Restart(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.d.Kill()
	d, err := Start(ctx, r.opts)
	if err != nil {
		return err
	}
	r.d = d
	return nil
}
