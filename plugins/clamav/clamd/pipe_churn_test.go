package clamd

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/churn"
	"github.com/microengine/microengine/internal/devclamd"
)

// churnSignatureDir is the shipped signatures plus an .hdb naming each of
// the files in malicious after its own index, so that a verdict handed to
// the wrong scan shows as a wrong name, not only as a wrong status.
func churnSignatureDir(t *testing.T, malicious map[int][]byte) string {
	t.Helper()
	shipped, err := devclamd.RepoSignatureDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	entries, err := os.ReadDir(shipped)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "microengine.") {
			b, err := os.ReadFile(filepath.Join(shipped, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	var hdb strings.Builder
	for i, content := range malicious {
		sum := md5.Sum(content)
		fmt.Fprintf(&hdb, "%s:%d:%s\n", hex.EncodeToString(sum[:]), len(content), churnName(i))
	}
	if err := os.WriteFile(filepath.Join(dir, "churn.hdb"), []byte(hdb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func churnName(i int) string { return fmt.Sprintf("Churn.File.%d.Own", i) }

// Every verdict the pipe hands out is its own file's, while scans are
// cancelled at random points, clamd reloads its signatures twice and is
// killed and started again mid-run, and its session limits are low (a
// short queue, few threads, short idle and command timeouts): each file
// that answers OK is a benign one, each FOUND names the file's own
// signature, and a scan that failed says so (an error, never a verdict).
// Afterwards clamd holds no descriptor of the files, and the client no
// connection.
func TestFildesPipeVerdictsStayWithTheirFilesUnderChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clamd twice")
	}
	const files = 600
	filesDir := t.TempDir()
	contents := make([][]byte, files)
	malicious := map[int][]byte{}
	for i := range contents {
		c := make([]byte, 200+rand.IntN(3000))
		for j := range c {
			c[j] = 'a' + byte(rand.IntN(26))
		}
		c = append(c, fmt.Sprintf("\nfile %d\n", i)...)
		contents[i] = c
		if i%7 == 0 {
			malicious[i] = c
		}
		if err := os.WriteFile(filepath.Join(filesDir, fmt.Sprint(i)), c, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sigDir := churnSignatureDir(t, malicious)
	ctx, cancelAll := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancelAll()
	clamd := devclamd.StartRestartable(t, ctx, devclamd.Options{
		SignatureDir: sigDir, MaxThreads: 4,
		Config: []string{"MaxQueue 8", "IdleTimeout 2", "CommandReadTimeout 1"},
	})

	c, err := NewClient(clamd.Current().Address(), Options{Sessions: 8})
	if err != nil {
		t.Fatal(err)
	}
	baseline := openDescriptors(t)

	const rounds = 3
	var run churn.Run
	var ok, failed, cancelled atomic.Int64
	total := int64(files * rounds)
	// The churn: reload, restart, reload, at points in the run.
	churnDone := make(chan struct{})
	go func() {
		defer close(churnDone)
		waitFor := func(n int64) bool { return run.WaitFor(ctx, n) }
		if !waitFor(total / 5) {
			return
		}
		if err := clamd.Current().Reload(ctx); err != nil {
			t.Errorf("RELOAD: %v", err)
		}
		if !waitFor(total * 2 / 5) {
			return
		}
		if err := clamd.Restart(ctx); err != nil {
			t.Errorf("restart clamd: %v", err)
			return
		}
		if !waitFor(total * 3 / 5) {
			return
		}
		if err := clamd.Current().Reload(ctx); err != nil {
			t.Errorf("RELOAD: %v", err)
		}
	}()

	var reasonsMu sync.Mutex
	reasons := map[string]int{}
	// scanAll scans every file once per round on 32 workers; with churn,
	// a fifth of the scans are cancelled at random points (before the
	// command is sent, while it is, while clamd scans, after the answer),
	// and a scan may fail; without, every scan must be answered.
	scanAll := func(rounds int, churning bool) {
		run.Scan(32, files, rounds, func(i int) {
			f, err := os.Open(filepath.Join(filesDir, fmt.Sprint(i)))
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			sctx, cancel := context.WithCancel(ctx)
			willCancel := churning && rand.IntN(5) == 0
			if willCancel {
				time.AfterFunc(time.Duration(rand.IntN(2000))*time.Microsecond, cancel)
			}
			r, err := c.Fildes(sctx, f)
			cancel()
			switch {
			case err != nil && willCancel && errors.Is(err, context.Canceled):
				cancelled.Add(1)
			case err != nil:
				failed.Add(1)
				var ce *Error
				if !churning || !errors.As(err, &ce) {
					t.Errorf("file %d: %v", i, err)
				}
				reasonsMu.Lock()
				reasons[err.Error()]++
				reasonsMu.Unlock()
			default:
				ok.Add(1)
				_, bad := malicious[i]
				switch {
				case bad && (r.Status != StatusFound || !strings.HasPrefix(r.Signature, churnName(i)+".")):
					t.Errorf("file %d (malicious, %s): got %+v", i, churnName(i), r)
				case !bad && r.Status != StatusOK:
					t.Errorf("file %d (benign): got %+v", i, r)
				case r.ContentBytes != int64(len(contents[i])):
					t.Errorf("file %d: %d bytes, want %d", i, r.ContentBytes, len(contents[i]))
				}
			}
		})
	}
	scanAll(rounds, true)
	<-churnDone
	t.Logf("under churn: %d answered, %d cancelled, %d failed (of %d); failures: %v", ok.Load(), cancelled.Load(), failed.Load(), total, reasons)
	if ok.Load()+cancelled.Load()+failed.Load() != total {
		t.Errorf("%d outcomes for %d scans", ok.Load()+cancelled.Load()+failed.Load(), total)
	}
	// The client recovers: the restarted clamd answers every file.
	scanAll(1, false)

	c.Close()
	d := clamd.Current()
	deadline := time.Now().Add(10 * time.Second)
	for {
		held := descriptorsOf(d.Pid(), filesDir)
		now := openDescriptors(t)
		if len(held) == 0 && now <= baseline {
			break
		}
		if time.Now().After(deadline) {
			out, _ := exec.Command("ls", "-l", fmt.Sprintf("/proc/%d/fd", d.Pid())).CombinedOutput()
			t.Logf("clamd fds:\n%s\nlog:\n%s", out, d.LogTail(40))
			t.Fatalf("after Close: clamd holds %d descriptors of the files; the test process has %d open, %d before", len(held), now, baseline)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openDescriptors counts this process's open descriptors.
func openDescriptors(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// A scan that gives up costs no other scan its answer: with a fifth of
// them cancelled at random points (before their command is written,
// during, after), every scan that was not cancelled is answered, with
// its own file's verdict, on a clamd that stays up.
func TestFildesPipeCancelsFailNoOtherScan(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{})
	dir := t.TempDir()
	const files = 300
	for i := range files {
		content := fmt.Appendf(nil, "clean artifact %d\n", i)
		if i%5 == 0 {
			content = append(content, markerAlpha...)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancelAll := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelAll()
	c := newTestClient(t, d.Address(), Options{Sessions: 8})
	jobs := make(chan int)
	var wg sync.WaitGroup
	var answered, cancelled atomic.Int64
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				f, err := os.Open(filepath.Join(dir, fmt.Sprint(i%files)))
				if err != nil {
					t.Error(err)
					return
				}
				sctx, cancel := context.WithCancel(ctx)
				willCancel := rand.IntN(5) == 0
				if willCancel {
					time.AfterFunc(time.Duration(rand.IntN(1000))*time.Microsecond, cancel)
				}
				r, err := c.Fildes(sctx, f)
				cancel()
				f.Close()
				want := StatusOK
				if i%files%5 == 0 {
					want = StatusFound
				}
				switch {
				case err != nil && willCancel && errors.Is(err, context.Canceled):
					cancelled.Add(1)
				case err != nil:
					t.Errorf("file %d (cancelled: %v): %v", i%files, willCancel, err)
				case r.Status != want:
					t.Errorf("file %d: %+v, want %v", i%files, r, want)
				default:
					answered.Add(1)
				}
			}
		}()
	}
	for i := range 4 * files {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	t.Logf("%d answered, %d cancelled", answered.Load(), cancelled.Load())
}
