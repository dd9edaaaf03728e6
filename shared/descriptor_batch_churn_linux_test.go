package shared

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Each scan's descriptor is its own file's, and each answer its own
// scan's, while a quarter of the scans are cancelled at random points
// and the plugin answers in any order: the plugin reads the file it got
// and names what it read, every scan that was not cancelled gets the
// name of its own file, and afterwards no descriptor of any file is open.
func TestBatchesDistinctFilesUnderCancels(t *testing.T) {
	dir := t.TempDir()
	const files = 400
	paths := make([]string, files)
	for i := range files {
		paths[i] = filepath.Join(dir, fmt.Sprint(i))
		content := append(bytes.Repeat([]byte{'x'}, rand.IntN(5000)), fmt.Sprintf("\nfile %d", i)...)
		if err := os.WriteFile(paths[i], content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	openOfDir := func() int {
		entries, _ := os.ReadDir("/proc/self/fd")
		n := 0
		for _, e := range entries {
			if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
				n++
			}
		}
		return n
	}
	c := connectByBatches(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		if a.File == nil {
			return Result{}, errors.New("streamed, not by reference")
		}
		b, err := io.ReadAll(a.Content)
		if err != nil {
			return Unknown("read: %v", err), nil
		}
		_, name, _ := bytes.Cut(b, []byte("\nfile "))
		// Answers end in another order than the requests came.
		if rand.IntN(4) == 0 {
			select {
			case <-time.After(time.Duration(rand.IntN(3)) * time.Millisecond):
			case <-ctx.Done():
				return Result{}, ctx.Err()
			}
		}
		if name[len(name)-1]%3 == 0 {
			return Result{Verdict: VerdictMalicious, Confidence: 1, MalwareFamily: string(name)}, nil
		}
		return Result{Verdict: VerdictBenign, Confidence: 1, Metadata: map[string]string{"read": string(name)}}, nil
	}})
	var answered, cancelled atomic.Int64
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 48 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				f, err := os.Open(paths[i])
				if err != nil {
					t.Error(err)
					return
				}
				st, _ := f.Stat()
				ctx, cancel := context.WithCancel(context.Background())
				willCancel := rand.IntN(4) == 0
				if willCancel {
					time.AfterFunc(time.Duration(rand.IntN(1500))*time.Microsecond, cancel)
				}
				res, err := c.Scan(ctx, Artifact{ID: fmt.Sprint(i), Type: ArtifactFile, Size: st.Size(), File: f, Content: io.NewSectionReader(f, 0, st.Size())})
				cancel()
				f.Close()
				id := fmt.Sprint(i)
				got := res.MalwareFamily
				if res.Verdict == VerdictBenign {
					got = res.Metadata["read"]
				}
				switch {
				case err != nil && willCancel && errors.Is(err, context.Canceled):
					cancelled.Add(1)
				case err != nil:
					t.Errorf("file %s (cancelled: %v): %v", id, willCancel, err)
				case got != id || (res.Verdict == VerdictMalicious) != (id[len(id)-1]%3 == 0):
					t.Errorf("file %s: got %s for file %q", id, res.Verdict, got)
				default:
					answered.Add(1)
				}
			}
		}()
	}
	for range 5 {
		for _, i := range rand.Perm(files) {
			jobs <- i
		}
	}
	close(jobs)
	wg.Wait()
	t.Logf("%d answered, %d cancelled", answered.Load(), cancelled.Load())
	if c.fds.noBatches.Load() {
		t.Fatal("the scans did not go over the batch socket")
	}
	waitFor(t, func() bool { return openOfDir() == 0 })
}
