// Package churn drives the churn tests: a set of files scanned again and
// again on many workers, in a new random order each round, while the test
// disturbs the scanner (cancels, clamd reloads and restarts, a killed
// plugin) at points counted in finished scans.
package churn

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Run counts the scans finished across its rounds.
type Run struct {
	done atomic.Int64
}

// Scan calls scan for every file number below files, once per round,
// on workers goroutines, and returns when every call has returned. Each
// call counts as a finished scan once it returns.
func (r *Run) Scan(workers, files, rounds int, scan func(i int)) {
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				scan(i)
				r.done.Add(1)
			}
		})
	}
	for range rounds {
		for _, i := range rand.Perm(files) {
			jobs <- i
		}
	}
	close(jobs)
	wg.Wait()
}

// WaitFor waits until n scans have finished; false when ctx ended first.
func (r *Run) WaitFor(ctx context.Context, n int64) bool {
	for r.done.Load() < n {
		if ctx.Err() != nil {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}
