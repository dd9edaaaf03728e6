//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/internal/samples"
)

// answeredInTime waits for each bounty's first answer and checks it came
// before the bounty's expiration.
func answeredInTime(t *testing.T, mk *marketplace, keys []string, expiries map[string]time.Time, verdicts ...string) {
	t.Helper()
	for _, key := range keys {
		a := mk.waitAnswer(key, time.Until(expiries[key])+time.Second)
		if a.At.After(expiries[key]) {
			t.Errorf("bounty %s answered %s after its expiration", key, a.At.Sub(expiries[key]))
		}
		ok := false
		for _, v := range verdicts {
			ok = ok || a.Verdict == v
		}
		if !ok {
			t.Errorf("bounty %s answered %q, want one of %v", key, a.Verdict, verdicts)
		}
	}
}

// TestStallsStarveNobody: downloads that never send headers and answers
// that are always refused hold no bounty behind them past its expiration.
func TestStallsStarveNobody(t *testing.T) {
	clamd := devclamd.StartT(t, devclamd.Options{})
	mk := newMarketplace(t)
	dir := engineDir(t, clamd, "")
	// The bounties behind the stalls are answered unknown by the deadline
	// watch, all together, a safety margin (plus up to two 250 ms ticks)
	// before they expire: with the other tests' 500 ms, 100 answers in a
	// burst reached the marketplace 594-700 ms early on a loaded 2-core
	// machine, too close to call. The default 2 s leaves it room.
	cfg := filepath.Join(dir, "engine.hcl")
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	withMargin := strings.Replace(string(raw), `safety_margin  = "500ms"`, `safety_margin  = "2s"`, 1)
	if withMargin == string(raw) {
		t.Fatal("engine.hcl has no safety_margin to raise")
	}
	if err := os.WriteFile(cfg, []byte(withMargin), 0o644); err != nil {
		t.Fatal(err)
	}
	eng := startEngine(t, dir)
	defer close(mk.hold)

	t.Run("downloads that never answer", func(t *testing.T) {
		// Eight held downloads keep the four workers busy for two rounds
		// of fetch_timeout (2 s each): longer than the bounties behind
		// them live.
		for range 8 {
			b, key := mk.newBounty(samples.EICAR(), time.Minute)
			b.ArtifactURI = mk.srv.URL + "/hold/" + key
			eng.sendBounty(b)
		}
		var keys []string
		expiries := map[string]time.Time{}
		for range 100 {
			b, key := mk.newBounty(samples.EICAR(), 3*time.Second)
			eng.sendBounty(b)
			keys = append(keys, key)
			expiries[key], _ = time.Parse(time.RFC3339Nano, b.Expiration)
		}
		answeredInTime(t, mk, keys, expiries, "malicious", "unknown")
	})

	t.Run("answers that are always refused", func(t *testing.T) {
		for range 4 {
			b, key := mk.newBounty(samples.EICAR(), 30*time.Second)
			mk.mu.Lock()
			mk.failFirst[key] = 1 << 30
			mk.mu.Unlock()
			eng.sendBounty(b)
		}
		var keys []string
		expiries := map[string]time.Time{}
		// 10 s, less the 2 s margin, is room for their scans whatever the
		// moving average of scan times the held downloads above left.
		for range 6 {
			b, key := mk.newBounty(samples.EICAR(), 10*time.Second)
			eng.sendBounty(b)
			keys = append(keys, key)
			expiries[key], _ = time.Parse(time.RFC3339Nano, b.Expiration)
		}
		answeredInTime(t, mk, keys, expiries, "malicious")
	})
}

// fillDisk writes a file in dir until the file system is full, and returns
// its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, chunk := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill the disk: %v", err)
				}
				break
			}
		}
	}
	return path
}

// TestDiskFullNeverConflicts: with the data directory's disk full when
// answers are ready, nothing uncommitted is posted; once space is free
// the commits are retried while running, each bounty is answered, and a
// restart posts no other answer.
func TestDiskFullNeverConflicts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs as the data directory")
	}
	clamd := devclamd.StartT(t, devclamd.Options{})
	mk := newMarketplace(t)
	dir := engineDir(t, clamd, "")
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", data).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", data).Run() })
	eng := startEngine(t, dir)

	// 2 KB of metadata each: on a 16 MiB tmpfs, committing the answers of
	// four such bounties then needs fresh space in the store's files
	// (JetStream's file store appends every write), so every commit fails
	// until space is freed.
	var keys []string
	for i := range 4 {
		b, key := mk.newBounty(samples.EICAR(), time.Minute)
		b.ArtifactURI = mk.srv.URL + "/hold/" + key
		b.Metadata = map[string]any{"source": "e2e", "pad": strings.Repeat(fmt.Sprint(i), 2000)}
		eng.sendBounty(b)
		keys = append(keys, key)
	}
	waitFor(t, 10*time.Second, func() bool { return mk.holdHits.Load() == 4 })
	filler := fillDisk(t, data)
	close(mk.hold) // the downloads go on, onto the full disk; later ones would succeed
	waitFor(t, 10*time.Second, func() bool {
		return strings.Contains(eng.logs(), "cannot commit the answer: retrying")
	})
	for _, key := range keys {
		if as := mk.answersFor(key); len(as) > 0 {
			t.Errorf("bounty %s answered (%s) before its answer could be committed", key, as[0].Verdict)
		}
	}

	os.Remove(filler)
	for _, key := range keys {
		mk.waitAnswer(key, 20*time.Second)
	}
	eng.stop()
	eng = startEngine(t, dir)
	time.Sleep(2 * time.Second) // a restart that posted again would do it at once
	for _, key := range keys {
		as := mk.answersFor(key)
		for _, a := range as[1:] {
			if a.Verdict != as[0].Verdict || a.RawBid != as[0].RawBid {
				t.Errorf("bounty %s answered %s (bid %s), then %s (bid %s)", key, as[0].Verdict, as[0].RawBid, a.Verdict, a.RawBid)
			}
		}
		if len(as) != 1 {
			t.Errorf("bounty %s answered %d times, want once", key, len(as))
		}
	}
}

func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
