package clamd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/devclamd"
)

// Many FILDES at once ride the one pipe: each gets its own verdict, under
// its own number in the session, and clamd keeps no descriptor after.
func TestFildesPipelinedAgainstRealClamd(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{})
	dir := t.TempDir()
	ctx := testContext(t)
	c := newTestClient(t, d.Address(), Options{Sessions: 4})
	const n = 200
	var wg sync.WaitGroup
	numbers := make(chan int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			content := []byte(fmt.Sprintf("clean artifact %d %d\n", i, time.Now().UnixNano()))
			want := StatusOK
			if i%5 == 0 {
				content = append(content, markerAlpha...)
				want = StatusFound
			}
			f := openFile(t, dir, fmt.Sprintf("a%d", i), content)
			r, err := c.Fildes(ctx, f)
			if err != nil || r.Status != want || r.ContentBytes != int64(len(content)) {
				t.Errorf("artifact %d: %+v, %v; want %v", i, r, err, want)
				return
			}
			if want == StatusFound && !strings.Contains(r.Signature, "Marker.Alpha") {
				t.Errorf("artifact %d: signature %q", i, r.Signature)
			}
			numbers <- r.Session
		}()
	}
	wg.Wait()
	close(numbers)
	seen := map[int]bool{}
	for k := range numbers {
		if k < 1 || k > n || seen[k] {
			t.Errorf("command number %d twice or out of 1..%d: not one session", k, n)
		}
		seen[k] = true
	}
	deadline := time.Now().Add(5 * time.Second)
	for held := descriptorsOf(d.Pid(), dir); len(held) > 0; held = descriptorsOf(d.Pid(), dir) {
		if time.Now().After(deadline) {
			t.Fatalf("clamd still holds %d descriptors after answering", len(held))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A scan that gives up while others wait on the pipe leaves them their
// answers; a pipe clamd hung up on is replaced, and the scans sent on it
// resent once; a closed client still scans, a connection per call.
func TestFildesPipeCancelHangUpAndClose(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{})
	dir := t.TempDir()
	ctx := testContext(t)
	c := newTestClient(t, d.Address(), Options{Sessions: 2})
	clean := openFile(t, dir, "clean", []byte("nothing to see here\n"))

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Fildes(cctx, clean); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: got %v, want context.Canceled", err)
	}
	if r, err := c.Fildes(ctx, clean); err != nil || r.Status != StatusOK {
		t.Fatalf("after a cancel: %+v, %v", r, err)
	}

	// clamd hangs up (as after its idle timeout): the next scan finds the
	// pipe failed, or fails on it and is resent on a new one.
	c.pipeMu.Lock()
	first := c.pipe
	c.pipeMu.Unlock()
	first.conn.Close()
	r, err := c.Fildes(ctx, clean)
	if err != nil || r.Status != StatusOK || r.Session != 1 {
		t.Fatalf("after the hang-up: %+v, %v; want OK as command 1 of a new session", r, err)
	}

	c.Close()
	if r, err := c.Fildes(ctx, clean); err != nil || r.Status != StatusOK {
		t.Fatalf("after Close: %+v, %v; want OK on a connection of its own", r, err)
	}
	c.pipeMu.Lock()
	defer c.pipeMu.Unlock()
	if c.pipe != nil {
		t.Fatal("a closed client opened a pipe")
	}
}
