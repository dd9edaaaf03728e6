package launch_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/shared/conformance"
	"github.com/microengine/microengine/shared/launch"
)

// eicarBin is the eicar plugin, built once by TestMain.
var eicarBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	path, cleanup, err := conformance.BuildPlugin("github.com/microengine/microengine/plugins/eicar")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	eicarBin = path
	return m.Run()
}

// start launches cfg and dispenses its scanner; the caller kills it.
func start(t *testing.T, cfg launch.Config) (*launch.Client, error) {
	t.Helper()
	c, err := launch.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := launch.Dispense(c); err != nil {
		launch.KillClient(c, 5*time.Second, hclog.NewNullLogger())
		return nil, err
	}
	return c, nil
}

// TestPinCannotBeRaced swaps the file at the plugin's path, every half
// millisecond, between the pinned binary and a script that records that
// it ran and then runs the real plugin (so its launch looks healthy),
// while the plugin is launched again and again. Whatever the timing, the
// script never runs: the bytes that were hashed are the bytes executed.
// go-plugin's SecureConfig hashes the path and then executes the path;
// relying on it, 3 of 60 such launches ran the script.
func TestPinCannotBeRaced(t *testing.T) {
	sum, err := launch.FileSHA256(eicarBin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ran := filepath.Join(dir, "script-ran")
	script := filepath.Join(dir, "script")
	body := fmt.Sprintf("#!/bin/sh\necho ran >> %q\nexec %q \"$@\"\n", ran, eicarBin)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "microengine-plugin-eicar")
	swap := func(src, tmp string) {
		_ = os.Remove(tmp)
		if err := os.Link(src, tmp); err != nil {
			t.Error(err)
			return
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Error(err)
		}
	}
	swap(eicarBin, path+".a")

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			if i%2 == 0 {
				swap(script, path+".b")
			} else {
				swap(eicarBin, path+".a")
			}
			time.Sleep(500 * time.Microsecond)
		}
	}()

	const launches = 60
	started, refused := 0, 0
	pinDir := t.TempDir()
	for i := range launches {
		cfg := launch.Config{Path: path, SHA256: sum, StartTimeout: 10 * time.Second}
		if i%2 == 1 {
			cfg.PinDir = pinDir // the host's directory of verified copies
		}
		c, err := start(t, cfg)
		switch {
		case err == nil:
			started++
			launch.KillClient(c, 5*time.Second, hclog.NewNullLogger())
		case strings.Contains(err.Error(), "checksums did not match"):
			refused++
		default:
			t.Errorf("launch %d: %v", i, err)
		}
	}
	stop()
	wg.Wait()

	if raw, err := os.ReadFile(ran); err == nil || !os.IsNotExist(err) {
		t.Errorf("the unpinned script ran %d times in %d launches", strings.Count(string(raw), "ran\n"), launches)
	}
	t.Logf("%d launches: %d started the pinned binary, %d refused a mismatch", launches, started, refused)
	if started == 0 {
		t.Error("no launch started: the test proves nothing")
	}
}

// A relaunch with the host's directory of verified copies runs the pinned
// bytes even after the path was replaced; any other launch reads the path
// and refuses the replacement.
func TestPinnedRelaunchRunsThePinnedBytes(t *testing.T) {
	sum, err := launch.FileSHA256(eicarBin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "microengine-plugin-eicar")
	raw, err := os.ReadFile(eicarBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	pinDir := filepath.Join(t.TempDir(), "pinned")
	cfg := launch.Config{Path: path, SHA256: sum, PinDir: pinDir}
	c, err := start(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.SHA256() != sum {
		t.Errorf("SHA256() = %q, want the pin %s", c.SHA256(), sum)
	}
	launch.KillClient(c, 5*time.Second, hclog.NewNullLogger())
	if fi, err := os.Stat(pinDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("pin directory: %v %v, want 0700", fi, err)
	}

	ran := filepath.Join(dir, "script-ran")
	script := fmt.Sprintf("#!/bin/sh\necho ran >> %q\nexec %q \"$@\"\n", ran, eicarBin)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	relaunch := cfg
	relaunch.Relaunch = true
	c, err = start(t, relaunch)
	if err != nil {
		t.Fatalf("relaunch with the verified copy: %v", err)
	}
	launch.KillClient(c, 5*time.Second, hclog.NewNullLogger())

	// A launch that is not a relaunch (a swap) reads the path again.
	if c, err := start(t, cfg); err == nil || !strings.Contains(err.Error(), "checksums did not match") {
		if err == nil {
			launch.KillClient(c, 5*time.Second, hclog.NewNullLogger())
		}
		t.Errorf("a swap to a replaced binary: %v; want a checksum mismatch", err)
	}
	cfg.PinDir = ""
	if c, err := start(t, cfg); err == nil || !strings.Contains(err.Error(), "checksums did not match") {
		if err == nil {
			launch.KillClient(c, 5*time.Second, hclog.NewNullLogger())
		}
		t.Errorf("a fresh launch of a replaced binary: %v; want a checksum mismatch", err)
	}
	if _, err := os.Stat(ran); !os.IsNotExist(err) {
		t.Errorf("the replacement ran: %v", err)
	}

	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	cfg.PinDir = open
	if _, err := launch.NewClient(cfg); err == nil || !strings.Contains(err.Error(), "only its owner may write") {
		t.Errorf("a world-writable pin directory: %v; want it refused", err)
	}
}
