package pluginmgr_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/pluginmgr"
	"github.com/microengine/microengine/internal/testbin"
	"github.com/microengine/microengine/internal/testproc"
	"github.com/microengine/microengine/shared"
	pluginlaunch "github.com/microengine/microengine/shared/launch"
)

const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// binaries are built once per test run: go build is the slow part.
type binaries struct {
	eicarV1, eicarV2 string
	crasher          string // panics on content holding "CRASH-ME"
	slowconfig       string // Configure takes configure_for
}

var (
	buildOnce sync.Once
	built     binaries
	buildErr  error
)

func bins(t *testing.T) binaries {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pluginmgr-bins-")
		if err != nil {
			buildErr = err
			return
		}
		if built.eicarV1, buildErr = testbin.Build(dir, "eicar-v1", "./plugins/eicar", "main.version=1.0.0"); buildErr != nil {
			return
		}
		if built.eicarV2, buildErr = testbin.Build(dir, "eicar-v2", "./plugins/eicar", "main.version=2.0.0"); buildErr != nil {
			return
		}
		if built.crasher, buildErr = testbin.Build(dir, "crasher", "./internal/testplugins/crasher"); buildErr != nil {
			return
		}
		built.slowconfig, buildErr = testbin.Build(dir, "slowconfig", "./internal/testplugins/slowconfig")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.eicarV1 != "" {
		os.RemoveAll(filepath.Dir(built.eicarV1))
	}
	os.Exit(code)
}

// fixture is an engine.hcl in a temp folder with a copy of a plugin binary
// beside it, so tests can replace the binary as an operator would.
type fixture struct {
	t      *testing.T
	name   string
	dir    string
	cfg    string
	plugin string
}

func newFixture(t *testing.T, binary string, pluginBody string) *fixture {
	t.Helper()
	return newNamedFixture(t, "eicar", binary, pluginBody)
}

func newNamedFixture(t *testing.T, name, binary string, pluginBody string) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, name: name, dir: dir, cfg: filepath.Join(dir, "engine.hcl"), plugin: filepath.Join(dir, "microengine-plugin-"+name)}
	f.install(binary)
	f.writeConfig(pluginBody)
	return f
}

// install replaces the plugin binary the safe way: write beside, rename.
func (f *fixture) install(src string) {
	f.t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		f.t.Fatal(err)
	}
	tmp := f.plugin + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, f.plugin); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) writeConfig(pluginBody string) {
	f.t.Helper()
	src := fmt.Sprintf("engine {\n  data_dir = %q\n}\nplugin %q {\n  path = \"./microengine-plugin-%s\"\n  timeout = \"20s\"\n%s\n}\n", f.dir, f.name, f.name, pluginBody)
	if err := os.WriteFile(f.cfg, []byte(src), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) load() (*config.Config, error) {
	cfg, diags := config.Load(f.cfg)
	if diags.HasErrors() {
		return nil, diags
	}
	return cfg, nil
}

var fastOptions = pluginmgr.Options{
	HealthInterval: 200 * time.Millisecond,
	DrainTimeout:   10 * time.Second,
	BackoffBase:    200 * time.Millisecond,
	BackoffMax:     2 * time.Second,
	StableAfter:    10 * time.Second,
	WaitForPlugin:  5 * time.Second,
}

func (f *fixture) start(opts pluginmgr.Options) *pluginmgr.Manager {
	f.t.Helper()
	cfg, err := f.load()
	if err != nil {
		f.t.Fatal(err)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: testWriter{f.t}})
	m, diags := pluginmgr.New(context.Background(), cfg, log, opts)
	if diags.HasErrors() {
		f.t.Fatal(diags)
	}
	f.t.Cleanup(m.Close)
	return m
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func scanBytes(ctx context.Context, eng *engine.Engine, b []byte) engine.Result {
	return eng.Scan(ctx, engine.Artifact{ID: "t", Type: shared.ArtifactFile, Size: int64(len(b)), Content: bytes.NewReader(b)})
}

func status(t *testing.T, m *pluginmgr.Manager) pluginmgr.Status {
	t.Helper()
	st := m.Status()
	if len(st) != 1 {
		t.Fatalf("want 1 plugin in status, got %d", len(st))
	}
	return st[0]
}

func TestEicarThroughRealPlugin(t *testing.T) {
	f := newFixture(t, bins(t).eicarV1, "")
	eng := engine.New(f.start(fastOptions))
	ctx := context.Background()

	split := make([]byte, shared.DefaultChunkSize+1000)
	copy(split[shared.DefaultChunkSize-30:], eicar) // straddles the first chunk boundary
	tests := []struct {
		name    string
		content []byte
		want    shared.Verdict
	}{
		{"eicar", []byte(eicar), shared.VerdictMalicious},
		{"clean", []byte("hello, world\n"), shared.VerdictBenign},
		{"empty", nil, shared.VerdictBenign},
		{"split across chunks", split, shared.VerdictMalicious},
		{"almost eicar", []byte(eicar[:len(eicar)-1]), shared.VerdictBenign},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := scanBytes(ctx, eng, tt.content)
			if res.Verdict != tt.want {
				t.Fatalf("verdict = %s (%s), want %s", res.Verdict, res.Reason, tt.want)
			}
			if tt.want == shared.VerdictMalicious && res.MalwareFamily != "EICAR-Test-File" {
				t.Errorf("family = %q, want EICAR-Test-File", res.MalwareFamily)
			}
		})
	}
}

// TestSlowConfigureKeepsHealthBudget starts a plugin whose Configure takes
// longer than one call's budget (as the yara plugin does on a large public
// rule collection: ~61,000 rules took 17 s against the 10 s budget). The
// Health call after it gets a budget of its own, so the plugin starts and
// answers; with the clock started before Info it was refused as "health:
// context deadline exceeded". The budget is 2 s, not less: Info and Health
// must each fit in it on a loaded machine (a 500 ms one left a first call
// to a new process no room).
func TestSlowConfigureKeepsHealthBudget(t *testing.T) {
	f := newNamedFixture(t, "slowconfig", bins(t).slowconfig, "  config {\n    configure_for = \"3s\"\n  }")
	opts := fastOptions
	opts.CallTimeout = 2 * time.Second
	m := f.start(opts)
	if st := status(t, m); !st.Healthy {
		t.Fatalf("plugin not healthy after a slow Configure: %+v", st)
	}
	if res := scanBytes(context.Background(), engine.New(m), []byte(eicar)); res.Verdict != shared.VerdictMalicious {
		t.Fatalf("verdict = %s (%s), want malicious", res.Verdict, res.Reason)
	}
}

// TestLargeArtifactFlatMemory streams 100 MiB through host and plugin and
// checks neither holds it: the plugin's peak RSS and the host's peak heap
// stay far below the artifact's size.
func TestLargeArtifactFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 100 MiB")
	}
	f := newFixture(t, bins(t).eicarV1, "")
	m := f.start(fastOptions)
	eng := engine.New(m)
	const size = 100 << 20
	path := filepath.Join(t.TempDir(), "big")
	w, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{1})
	if _, err := io.CopyN(w, rng, size-int64(len(eicar))); err != nil {
		t.Fatal(err)
	}
	w.WriteString(eicar) // at the very end: the whole stream must be read
	w.Close()
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()

	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	res := eng.Scan(context.Background(), engine.Artifact{ID: "big", Type: shared.ArtifactFile, Size: size, Content: file})
	close(stop)
	<-sampled
	if res.Verdict != shared.VerdictMalicious {
		t.Fatalf("verdict = %s (%s), want malicious (EICAR at the end of 100 MiB)", res.Verdict, res.Reason)
	}
	pluginPeak := testproc.MemoryStatus(status(t, m).PID, "VmHWM")
	t.Logf("host peak heap %d MiB, plugin peak RSS %d MiB", peak.Load()>>20, pluginPeak>>20)
	if peak.Load() > 32<<20 {
		t.Errorf("host heap peaked at %d MiB streaming 100 MiB; want < 32 MiB", peak.Load()>>20)
	}
	if pluginPeak > 48<<20 {
		t.Errorf("plugin RSS peaked at %d MiB streaming 100 MiB; want < 48 MiB", pluginPeak>>20)
	}
}

// TestRepeatedKillsBackOff kills the plugin again and again: each relaunch
// waits longer, and no scan of EICAR meanwhile is ever benign.
//
// Two things keep it independent of the machine's load. Each gap is
// measured from before the kill to the new process's start (not to when
// this loop saw it up, which adds the launch's own time, 40 ms to over a
// second on a loaded 2-core machine), and is held to the backoff's lower
// bound rather than compared with another gap. And no kill lands while a
// scan retried after the previous kill is in flight: the manager rightly
// blames such a crash on the retried artifact and does not back off for
// it, which under load gave gaps of [44ms 36ms 44ms 324ms].
func TestRepeatedKillsBackOff(t *testing.T) {
	f := newFixture(t, bins(t).eicarV1, "")
	opts := fastOptions
	opts.WaitForPlugin = 50 * time.Millisecond
	m := f.start(opts)
	eng := engine.New(m)

	stop := make(chan struct{})
	var scans, unknown atomic.Int64
	var bad atomic.Value
	var wg sync.WaitGroup
	// epoch is raised before each kill; done[w] is the epoch in which
	// worker w started the last scan it finished (its retry included).
	var epoch atomic.Int64
	done := make([]atomic.Int64, 2)
	for w := range done {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				started := epoch.Load()
				res := scanBytes(context.Background(), eng, []byte(eicar))
				done[w].Store(started)
				scans.Add(1)
				switch res.Verdict {
				case shared.VerdictUnknown:
					unknown.Add(1)
				case shared.VerdictMalicious:
				default:
					bad.Store(fmt.Sprintf("EICAR scanned as %s during restarts", res.Verdict))
				}
			}
		}()
	}
	// settled waits until every worker finished a scan it started after
	// now: no scan of before (nor its retry) is still in flight.
	settled := func(i int) {
		t.Helper()
		e := epoch.Add(1)
		deadline := time.Now().Add(15 * time.Second)
		for w := range done {
			for done[w].Load() < e {
				if time.Now().After(deadline) {
					t.Fatalf("before kill %d: scans in flight still not finished after 15s", i)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}

	var gaps []time.Duration
	for i := range 4 {
		settled(i)
		st := status(t, m)
		killed := time.Now() // before the kill: the gap is never overstated
		if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", i, err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			now := status(t, m)
			if now.Up && now.PID != st.PID {
				gaps = append(gaps, now.StartedAt.Sub(killed))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("plugin not relaunched within 15s after kill %d: %+v", i, now)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	t.Logf("relaunch gaps %v; %d scans, %d unknown", gaps, scans.Load(), unknown.Load())
	// The first crash is relaunched at once; each quick one after it
	// waits BackoffBase, then twice as long, and so on.
	for i, want := 1, opts.BackoffBase; i < len(gaps); i, want = i+1, want*2 {
		if gaps[i] < want {
			t.Errorf("kill %d: relaunched %s after it, want a backoff of at least %s (gaps %v)", i+1, gaps[i], want, gaps)
		}
	}
	if got := status(t, m).Restarts; got != 4 {
		t.Errorf("restarts = %d, want 4", got)
	}
	if unknown.Load() == 0 {
		t.Errorf("no scan was unknown during %d outages; the outage was not observed", len(gaps))
	}
}

// load runs scans of EICAR and clean content until stop, and reports any
// answer that is not the right one.
type load struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	scans   atomic.Int64
	wrong   atomic.Int64
	lastBad atomic.Value
}

func startLoad(eng *engine.Engine, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				content, want := []byte(eicar), shared.VerdictMalicious
				if (i+w)%2 == 0 {
					content, want = []byte(fmt.Sprintf("clean %d %d", w, i)), shared.VerdictBenign
				}
				res := scanBytes(context.Background(), eng, content)
				l.scans.Add(1)
				if res.Verdict != want {
					l.wrong.Add(1)
					l.lastBad.Store(fmt.Sprintf("%s, want %s: %s", res.Verdict, want, res.Reason))
				}
			}
		}()
	}
	return l
}

// waitScans waits until the load has run n scans in all.
func (l *load) waitScans(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.scans.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d scans under load after 10s, want %d", l.scans.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *load) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if l.wrong.Load() > 0 {
		t.Errorf("%d of %d scans under load answered wrong; last: %v", l.wrong.Load(), l.scans.Load(), l.lastBad.Load())
	}
	if l.scans.Load() < 20 {
		t.Errorf("only %d scans ran under load", l.scans.Load())
	}
}

func TestSwapUnderLoad(t *testing.T) {
	b := bins(t)
	f := newFixture(t, b.eicarV1, "")
	m := f.start(fastOptions)
	eng := engine.New(m)
	old := status(t, m)
	if old.Version != "1.0.0" {
		t.Fatalf("version %s before the swap, want 1.0.0", old.Version)
	}

	l := startLoad(eng, 4)
	l.waitScans(t, 10) // the swap lands in the middle of scans
	f.install(b.eicarV2)
	cfg, err := f.load()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(context.Background(), cfg); err != nil {
		t.Fatalf("reload: %v", err)
	}
	l.waitScans(t, l.scans.Load()+10) // and the new process serves some
	l.finish(t)

	now := status(t, m)
	if now.Version != "2.0.0" || now.PID == old.PID || now.SHA256 == old.SHA256 {
		t.Fatalf("after swap: %+v; want version 2.0.0 from a new process and binary", now)
	}
	waitGone(t, old.PID, 5*time.Second)
}

func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if !testproc.Alive(pid) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("process %d still alive %s later", pid, within)
}

func TestWatchSwapsReplacedBinary(t *testing.T) {
	b := bins(t)
	f := newFixture(t, b.eicarV1, "")
	m := f.start(fastOptions)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	loaded := make(chan struct{}, 1)
	go m.Watch(ctx, f.cfg, func() (*config.Config, hcl.Diagnostics) {
		select {
		case loaded <- struct{}{}:
		default:
		}
		return config.Load(f.cfg)
	})
	// The watch is running once it has seen engine.hcl change: rewrite
	// it (unchanged) until the watch reloads it. Each try waits out the
	// watch's settle time, which every new write restarts.
	raw, err := os.ReadFile(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for watching := false; !watching; {
		if err := os.WriteFile(f.cfg, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		select {
		case <-loaded:
			watching = true
		case <-time.After(time.Second):
			if time.Now().After(deadline) {
				t.Fatal("the watch never reloaded a rewritten engine.hcl")
			}
		}
	}

	l := startLoad(engine.New(m), 2)
	f.install(b.eicarV2)
	deadline = time.Now().Add(5 * time.Second)
	for status(t, m).Version != "2.0.0" {
		if time.Now().After(deadline) {
			t.Fatalf("new version not serving 5s after the binary was replaced: %+v", status(t, m))
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.finish(t)
}

func TestBrokenReplacementKeepsOldServing(t *testing.T) {
	b := bins(t)
	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, []byte("\x7fELF this is not a program"), 0o755)
	crasher := filepath.Join(t.TempDir(), "crasher")
	os.WriteFile(crasher, []byte("#!/bin/sh\necho 'plugin: cannot start' >&2\nexit 3\n"), 0o755)

	for _, tc := range []struct {
		name, binary, pin, want string
	}{
		{"garbage", garbage, "", "exec format error"},
		{"crashes at start", crasher, "", "handshake"},
		{"sha256 mismatch", b.eicarV2, "pinned", "checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, b.eicarV1, "")
			if tc.pin != "" {
				sum, err := pluginlaunch.FileSHA256(b.eicarV1)
				if err != nil {
					t.Fatal(err)
				}
				f.writeConfig(fmt.Sprintf("  sha256 = %q", sum))
			}
			m := f.start(fastOptions)
			eng := engine.New(m)
			old := status(t, m)
			l := startLoad(eng, 2)

			f.install(tc.binary)
			cfg, err := f.load()
			if tc.pin != "" {
				// The static check sees the pin mismatch first: the reload is
				// refused before anything is launched.
				if err == nil || !strings.Contains(err.Error(), "sha256") {
					t.Fatalf("config with a stale pin: %v; want a sha256 diagnostic", err)
				}
				cfg = m.Config()
			} else if err != nil {
				t.Fatal(err)
			}
			err = m.Reload(context.Background(), cfg)
			l.waitScans(t, l.scans.Load()+10) // the old process still serving
			l.finish(t)
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.want) {
				t.Fatalf("reload error %v; want one mentioning %q", err, tc.want)
			}
			now := status(t, m)
			if now.PID != old.PID || !now.Up || now.Version != "1.0.0" {
				t.Fatalf("after a refused swap: %+v; want the old process (pid %d) serving", now, old.PID)
			}
			if now.SwapError == "" {
				t.Error("the failed swap is not reported in Status")
			}
		})
	}
}

func TestReloadConfigChanges(t *testing.T) {
	f := newFixture(t, bins(t).eicarV1, "")
	m := f.start(fastOptions)
	eng := engine.New(m)
	old := status(t, m)
	padded := append([]byte("junk before "), eicar...)
	if v := scanBytes(context.Background(), eng, padded).Verdict; v != shared.VerdictMalicious {
		t.Fatalf("default mode: %s, want malicious", v)
	}

	// A bad value in the plugin's own block refuses the reload whole.
	f.writeConfig("  config {\n    strict = \"very\"\n  }")
	cfg, err := f.load()
	if err != nil {
		t.Fatalf("static load: %v", err)
	}
	err = m.Reload(context.Background(), cfg)
	var re *pluginmgr.ReloadError
	if !errors.As(err, &re) || !strings.Contains(re.Diags.Error(), "engine.hcl:8,14") {
		t.Fatalf("reload with strict = \"very\": %v; want a ReloadError at engine.hcl:8,14", err)
	}
	if now := status(t, m); now.PID != old.PID {
		t.Fatalf("a refused reload replaced the process")
	}

	f.writeConfig("  config {\n    strict = true\n  }")
	cfg, err = f.load()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(context.Background(), cfg); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if now := status(t, m); now.PID == old.PID {
		t.Fatal("a config change did not start a new process")
	}
	if v := scanBytes(context.Background(), eng, padded).Verdict; v != shared.VerdictBenign {
		t.Fatalf("strict mode: EICAR after junk is %s, want benign", v)
	}
	unchanged := status(t, m)
	if err := m.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if status(t, m).PID != unchanged.PID {
		t.Error("a reload with nothing changed replaced the process")
	}
}
