package pluginmgr

import (
	"context"
	"sync"
)

// gate lets a plugin's scans share its process, except a scan retried after
// a crash, which runs alone: when the process dies with several scans in
// flight, nothing says which artifact killed it, so each is retried by
// itself and a second crash names its artifact for certain. Scans that
// arrive while a retry waits queue behind it, so a stream of new scans
// cannot starve it (and new scans are not sent into a process that is
// about to be crashed again). What every scan pays for it: ~66 ns (two
// mutex sections, BenchmarkGateShared on 2 cores), against ~150 µs for the
// smallest scan's gRPC call.
type gate struct {
	mu        sync.Mutex
	shared    int           // scans in flight that share the process
	exclusive bool          // a retry holds the process
	waiting   int           // retries waiting to enter
	changed   chan struct{} // closed and replaced whenever the gate opens further
}

func newGate() *gate { return &gate{changed: make(chan struct{})} }

// enter waits until the scan may run: alone when exclusive. It fails only
// when ctx ends first.
func (g *gate) enter(ctx context.Context, exclusive bool) error {
	g.mu.Lock()
	if exclusive {
		g.waiting++
	}
	for {
		if g.free(exclusive) {
			if exclusive {
				g.waiting--
				g.exclusive = true
			} else {
				g.shared++
			}
			g.mu.Unlock()
			return nil
		}
		changed := g.changed
		g.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			g.mu.Lock()
			if exclusive {
				g.waiting--
				g.broadcastLocked() // shared scans queued behind this one may go
			}
			g.mu.Unlock()
			return ctx.Err()
		}
		g.mu.Lock()
	}
}

func (g *gate) free(exclusive bool) bool {
	if exclusive {
		return !g.exclusive && g.shared == 0
	}
	return !g.exclusive && g.waiting == 0
}

// leave ends a scan let in by enter.
func (g *gate) leave(exclusive bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if exclusive {
		g.exclusive = false
		g.broadcastLocked()
		return
	}
	// Shared scans wait only for retries; a retry waits for the last
	// shared scan to leave. Thousands of scans a second pass here, so
	// nobody is woken for nothing.
	if g.shared--; g.shared == 0 && g.waiting > 0 {
		g.broadcastLocked()
	}
}

func (g *gate) broadcastLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}
