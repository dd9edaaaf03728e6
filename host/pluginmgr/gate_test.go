package pluginmgr

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestGateRetryRunsAlone(t *testing.T) {
	g := newGate()
	ctx := context.Background()
	if err := g.enter(ctx, false); err != nil {
		t.Fatal(err)
	}
	retry := make(chan error, 1)
	go func() { retry <- g.enter(ctx, true) }()
	// The retry waits for the shared scan; a new shared scan queues
	// behind the retry rather than overtaking it.
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.waiting == 1 })
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := g.enter(short, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a shared scan entered while a retry waited: %v", err)
	}
	select {
	case err := <-retry:
		t.Fatalf("the retry entered beside a shared scan: %v", err)
	default:
	}
	g.leave(false)
	if err := <-retry; err != nil {
		t.Fatal(err)
	}
	later := make(chan error, 1)
	go func() { later <- g.enter(ctx, false) }()
	select {
	case err := <-later:
		t.Fatalf("a shared scan entered beside the retry: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	g.leave(true)
	if err := <-later; err != nil {
		t.Fatal(err)
	}
	g.leave(false)
}

func TestGateAbandonedRetryLetsOthersIn(t *testing.T) {
	g := newGate()
	ctx := context.Background()
	if err := g.enter(ctx, false); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	retry := make(chan error, 1)
	go func() { retry <- g.enter(rctx, true) }()
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.waiting == 1 })
	queued := make(chan error, 1)
	go func() { queued <- g.enter(ctx, false) }()
	cancel()
	if err := <-retry; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled retry: %v", err)
	}
	if err := <-queued; err != nil {
		t.Fatalf("the scan queued behind a cancelled retry: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkGateShared is the cost every scan pays for the crash retry's
// gate when no retry is waiting: two uncontended mutex sections.
func BenchmarkGateShared(b *testing.B) {
	g := newGate()
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := g.enter(ctx, false); err != nil {
				b.Fatal(err)
			}
			g.leave(false)
		}
	})
}
