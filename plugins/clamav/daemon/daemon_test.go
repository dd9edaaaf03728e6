package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/plugins/clamav/clamd"
)

// eicar is assembled at run time so that this file matches no signature.
func eicar() []byte {
	return []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
}

// A marker no shipped signature knows; the test adds one for it.
const markerCharlie = "MICROENGINE-TEST-" + "MARKER-CHARLIE"

// signatures copies the repo's test signatures into a folder of the test's
// own, which the test may change.
func signatures(t *testing.T) string {
	t.Helper()
	src, err := devclamd.RepoSignatureDir()
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !isDatabaseFile(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func start(t *testing.T, opts Options) *Daemon {
	t.Helper()
	if _, err := FindClamd(); err != nil {
		t.Fatalf("clamd is required for this test: %v", err)
	}
	opts.Logger = hclog.New(&hclog.LoggerOptions{Name: "daemon", Level: hclog.Warn, Output: os.Stderr})
	d, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func scan(t *testing.T, d *Daemon, content []byte) clamd.Reply {
	t.Helper()
	c, err := clamd.NewClient(d.Address(), clamd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Instream(within(t, 10*time.Second), bytes.NewReader(content))
	if err != nil {
		t.Fatalf("INSTREAM to the managed clamd: %v", err)
	}
	return r
}

func TestManagedClamdLifecycle(t *testing.T) {
	sigs := signatures(t)
	d := start(t, Options{Database: sigs, WatchInterval: 50 * time.Millisecond})
	if err := d.WaitReady(within(t, 30*time.Second)); err != nil {
		t.Fatalf("WaitReady: %v\n%s", err, d.LogTail())
	}
	if r := scan(t, d, eicar()); r.Status != clamd.StatusFound {
		t.Fatalf("EICAR: %+v", r)
	}

	conf, err := os.ReadFile(d.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range SafeLimits() {
		if !strings.Contains(string(conf), l[0]+" "+l[1]+"\n") {
			t.Errorf("clamd.conf lacks %s %s:\n%s", l[0], l[1], conf)
		}
	}

	t.Run("a new signature file is loaded with RELOAD", func(t *testing.T) {
		if r := scan(t, d, []byte(markerCharlie)); r.Status != clamd.StatusOK {
			t.Fatalf("before the new file: %+v", r)
		}
		before := d.Status()
		line := "MicroEngine.Test.Marker.Charlie:0:*:" + hexOf(markerCharlie) + "\n"
		if err := os.WriteFile(filepath.Join(sigs, "charlie.ndb"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
		// Ready again since a later time, in the same process: it went
		// through a reload. (Waiting to see "reloading" itself can miss
		// it: a reload of these few signatures takes milliseconds, and
		// may be over before this goroutine looks.)
		st, err := d.Wait(within(t, 30*time.Second), func(st Status) bool {
			return st.State == StateReady && st.Since.After(before.Since)
		})
		if err != nil {
			t.Fatalf("the reload did not happen or finish: %v (%+v)\n%s", err, st, d.LogTail())
		}
		if st.Pid != before.Pid || st.Restarts != before.Restarts {
			t.Fatalf("clamd was restarted, not reloaded: %+v, was %+v", st, before)
		}
		if r := scan(t, d, []byte(markerCharlie)); r.Status != clamd.StatusFound || !strings.HasPrefix(r.Signature, "MicroEngine.Test.Marker.Charlie") {
			t.Errorf("after the reload: %+v", r)
		}
	})

	t.Run("a killed clamd is restarted", func(t *testing.T) {
		before := d.Status()
		if err := syscall.Kill(before.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		st, err := d.Wait(within(t, 30*time.Second), func(st Status) bool {
			return st.State == StateReady && st.Pid != before.Pid
		})
		if err != nil {
			t.Fatalf("not back: %v (%+v)", err, st)
		}
		if st.Restarts != before.Restarts+1 {
			t.Errorf("Restarts = %d, want %d", st.Restarts, before.Restarts+1)
		}
		if r := scan(t, d, eicar()); r.Status != clamd.StatusFound {
			t.Errorf("EICAR after the restart: %+v", r)
		}
	})

	t.Run("Close stops clamd and removes its folder", func(t *testing.T) {
		pid := d.Status().Pid
		dir := filepath.Dir(d.ConfigPath())
		d.Close()
		if processAlive(pid) {
			// A zombie would still answer kill(0); clamd is our child
			// and Wait reaped it.
			t.Errorf("clamd %d still runs after Close", pid)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("folder %s still there after Close: %v", dir, err)
		}
		if st := d.Status(); st.State != StateStopped {
			t.Errorf("state %s after Close", st.State)
		}
	})
}

func TestBadDatabaseFolder(t *testing.T) {
	for name, dir := range map[string]string{"missing": filepath.Join(t.TempDir(), "nope"), "empty": t.TempDir()} {
		if _, err := Start(Options{Database: dir}); err == nil {
			t.Errorf("%s folder: Start succeeded", name)
		}
	}
}

// TestTestClamdsUseTheSameLimits: the clamds the tests start must be as
// safe as the one the plugin manages, or the tests would prove nothing
// about it.
func TestTestClamdsUseTheSameLimits(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{})
	conf, err := os.ReadFile(d.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range SafeLimits() {
		if !strings.Contains(string(conf), l[0]+" "+l[1]+"\n") {
			t.Errorf("devclamd's clamd.conf lacks %s %s", l[0], l[1])
		}
	}
}

func hexOf(s string) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteByte(digits[s[i]>>4])
		b.WriteByte(digits[s[i]&15])
	}
	return b.String()
}

// TestDatabaseClamdCannotLoad: a database clamd refuses makes WaitReady
// fail at once with clamd's own words, rather than wait through restarts.
func TestDatabaseClamdCannotLoad(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.ndb"), []byte("Broken.Sig:0:*:ZZZZ\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := start(t, Options{Database: dir})
	err := d.WaitReady(within(t, 30*time.Second))
	if !errors.Is(err, ErrCannotStart) || !strings.Contains(err.Error(), "Malformed database") {
		t.Errorf("WaitReady = %v, want ErrCannotStart quoting clamd", err)
	}
}
