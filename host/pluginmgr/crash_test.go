package pluginmgr_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/pluginmgr"
	"github.com/microengine/microengine/shared"
	pluginlaunch "github.com/microengine/microengine/shared/launch"
)

// passGate serves prefix then zeros, and stops every pass over the content
// at gate (the retry after a crash reads it again from the start): it
// says so on reached and waits for a token on release (or for release to
// be closed). A scan stopped there is certainly in flight.
type passGate struct {
	prefix  []byte
	gate    int64
	reached chan struct{}
	release chan struct{}
}

func newPassGate(prefix []byte, gate int64) *passGate {
	return &passGate{prefix: prefix, gate: gate, reached: make(chan struct{}, 4), release: make(chan struct{})}
}

func (g *passGate) ReadAt(p []byte, off int64) (int, error) {
	if off <= g.gate && g.gate < off+int64(len(p)) {
		g.reached <- struct{}{}
		<-g.release
	}
	clear(p)
	if off < int64(len(g.prefix)) {
		copy(p, g.prefix[off:])
	}
	return len(p), nil
}

// waitNewPID waits until the plugin serves from a process other than pid
// and returns the new one.
func waitNewPID(t *testing.T, st func() (int, bool), pid int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		now, up := st()
		if up && now != pid {
			return now
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin not relaunched within 10s of pid %d dying", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCrashMidScanIsRetriedOnTheRelaunchedProcess(t *testing.T) {
	f := newFixture(t, bins(t).eicarV1, "")
	m := f.start(fastOptions)
	eng := engine.New(m)
	before := status(t, m)

	g := newPassGate(nil, 4<<20)
	done := make(chan engine.Result, 1)
	go func() {
		done <- eng.Scan(context.Background(), engine.Artifact{ID: "x", Type: shared.ArtifactFile, Size: 64 << 20, Content: g})
	}()
	<-g.reached
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	g.release <- struct{}{} // the first pass goes on, into the dead process
	<-g.reached             // the retry, on the relaunched process
	close(g.release)
	res := <-done
	if res.Verdict != shared.VerdictBenign {
		t.Fatalf("scan whose plugin died once: %s (%s), want benign from the retry", res.Verdict, res.Reason)
	}
	after := status(t, m)
	if after.PID == before.PID || after.Restarts != 1 {
		t.Errorf("after the crash: pid %d (was %d), restarts %d; want a new pid and 1 restart", after.PID, before.PID, after.Restarts)
	}
	if next := scanBytes(context.Background(), eng, []byte(eicar)); next.Verdict != shared.VerdictMalicious {
		t.Fatalf("scan after the crash: %s (%s), want malicious", next.Verdict, next.Reason)
	}
}

// A scan that arrives while a crashed plugin is being relaunched waits for
// the new process (within its own timeout), however short WaitForPlugin
// is: that bound is for a plugin whose relaunches keep failing.
func TestScanArrivingDuringRelaunchWaits(t *testing.T) {
	f := newFixture(t, bins(t).eicarV1, "")
	opts := fastOptions
	opts.WaitForPlugin = time.Nanosecond
	opts.StableAfter = time.Nanosecond // each kill is a first crash: no backoff
	m := f.start(opts)
	eng := engine.New(m)
	pid := status(t, m).PID
	for i := range 3 {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if res := scanBytes(context.Background(), eng, []byte(eicar)); res.Verdict != shared.VerdictMalicious {
			t.Fatalf("scan right after kill %d: %s (%s), want malicious", i+1, res.Verdict, res.Reason)
		}
		pid = waitNewPID(t, func() (int, bool) { st := status(t, m); return st.PID, st.Up }, pid)
	}
}

func TestCrashDuringTheRetryGivesUnknown(t *testing.T) {
	f := newFixture(t, bins(t).eicarV1, "")
	m := f.start(fastOptions)
	eng := engine.New(m)
	pid := status(t, m).PID

	g := newPassGate(nil, 4<<20)
	done := make(chan engine.Result, 1)
	go func() {
		done <- eng.Scan(context.Background(), engine.Artifact{ID: "x", Type: shared.ArtifactFile, Size: 64 << 20, Content: g})
	}()
	for range 2 { // the scan, then its retry
		<-g.reached
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		g.release <- struct{}{}
		pid = waitNewPID(t, func() (int, bool) { st := status(t, m); return st.PID, st.Up }, pid)
	}
	res := <-done
	if res.Verdict != shared.VerdictUnknown {
		t.Fatalf("scan whose plugin died twice: %s, want unknown", res.Verdict)
	}
	if want := "eicar crashed on this artifact: it exited without a crash report"; !strings.Contains(res.Reason, want) {
		t.Errorf("reason %q; want it to contain %q", res.Reason, want)
	}
	if next := scanBytes(context.Background(), eng, []byte(eicar)); next.Verdict != shared.VerdictMalicious {
		t.Fatalf("scan after the crashes: %s (%s), want malicious", next.Verdict, next.Reason)
	}
}

// TestPoisonArtifactCostsOnlyItsOwnVerdict crashes a plugin (a real panic)
// with one artifact while three others are in flight on the same process:
// the three keep their verdicts, the poison one is unknown with the panic
// quoted, and a scan right after is answered by the relaunched process.
func TestPoisonArtifactCostsOnlyItsOwnVerdict(t *testing.T) {
	f := newNamedFixture(t, "crasher", bins(t).crasher, "")
	m := f.start(fastOptions)
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	eng := engine.New(m)
	before := status(t, m)

	const size, gate = 2 << 20, 1 << 20 // streamed, not sent whole
	innocents := []struct {
		prefix []byte
		want   shared.Verdict
	}{
		{[]byte(eicar), shared.VerdictMalicious},
		{nil, shared.VerdictBenign},
		{[]byte("just a document"), shared.VerdictBenign},
	}
	release := make(chan struct{})
	results := make([]chan engine.Result, len(innocents))
	for i, in := range innocents {
		g := newPassGate(in.prefix, gate)
		g.release = release
		results[i] = make(chan engine.Result, 1)
		go func() {
			results[i] <- eng.Scan(context.Background(), engine.Artifact{ID: "innocent", Type: shared.ArtifactFile, Size: size, Content: g})
		}()
		<-g.reached
	}
	poison := []byte("a harmless-looking header, then CRASH-ME and more")
	poisoned := make(chan engine.Result, 1)
	go func() { poisoned <- scanBytes(context.Background(), eng, poison) }()
	waitNewPID(t, func() (int, bool) { st := status(t, m); return st.PID, st.Up }, before.PID)
	close(release) // the three in flight find their process dead

	res := <-poisoned
	if res.Verdict != shared.VerdictUnknown {
		t.Fatalf("poison artifact: %s, want unknown", res.Verdict)
	}
	if want := "crasher crashed on this artifact: panic: assignment to entry in nil map (main.go:"; !strings.Contains(res.Reason, want) {
		t.Errorf("poison artifact's reason %q; want it to contain %q", res.Reason, want)
	}
	for i, in := range innocents {
		if got := <-results[i]; got.Verdict != in.want {
			t.Errorf("innocent artifact %d in flight during the crash: %s (%s), want %s", i, got.Verdict, got.Reason, in.want)
		}
	}
	// As `scan -concurrency 1` would: the next artifact right after.
	if next := scanBytes(context.Background(), eng, []byte(eicar)); next.Verdict != shared.VerdictMalicious {
		t.Fatalf("EICAR right after the poison: %s (%s), want malicious", next.Verdict, next.Reason)
	}
	st := status(t, m)
	if st.Crashes != 2 || !strings.Contains(st.LastCrash, "exited: panic: assignment to entry in nil map (main.go:") {
		t.Errorf("status: %d crashes, last %q; want 2 and the panic", st.Crashes, st.LastCrash)
	}
	for name, want := range map[string]float64{
		"microengine_plugin_crashes_total":           2,
		"microengine_plugin_crash_retries_total":     4,
		"microengine_plugin_crashed_artifacts_total": 1,
		"microengine_plugin_restarts_total":          2,
	} {
		if got := counter(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			var sum float64
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

// A pinned plugin that crashes after its binary was replaced (a swap that
// was refused, or not yet made) comes back as the pinned bytes, from the
// host's verified copy: neither the replacement nor nothing at all.
func TestPinnedRelaunchRunsThePinnedBytes(t *testing.T) {
	b := bins(t)
	sum, err := pluginlaunch.FileSHA256(b.eicarV1)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, b.eicarV1, fmt.Sprintf("  sha256 = %q", sum))
	m := f.start(fastOptions)
	old := status(t, m)

	ran := filepath.Join(t.TempDir(), "replacement-ran")
	script := filepath.Join(t.TempDir(), "replacement")
	body := fmt.Sprintf("#!/bin/sh\necho ran >> %q\nexec %q \"$@\"\n", ran, b.eicarV2)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	f.install(script)
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitNewPID(t, func() (int, bool) { st := status(t, m); return st.PID, st.Up }, old.PID)
	now := status(t, m)
	if now.Version != "1.0.0" || now.SHA256 != sum {
		t.Errorf("relaunched as %s (sha256 %s); want the pinned 1.0.0 (%s)", now.Version, now.SHA256, sum)
	}
	if _, err := os.Stat(ran); !os.IsNotExist(err) {
		t.Errorf("the replacement ran: %v", err)
	}
}

// TestCrashInConfigureIsQuoted starts a plugin that panics in Configure:
// the diagnostic quotes the panic and its frame, as a crash on an artifact
// is quoted, rather than the broken connection it left.
func TestCrashInConfigureIsQuoted(t *testing.T) {
	f := newNamedFixture(t, "crasher", bins(t).crasher, "  config {\n    panic_in = \"configure\"\n  }")
	cfg, err := f.load()
	if err != nil {
		t.Fatal(err)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: testWriter{t}})
	m, diags := pluginmgr.New(context.Background(), cfg, log, fastOptions)
	if !diags.HasErrors() {
		m.Close()
		t.Fatal("a plugin that panics in Configure started")
	}
	want := "the plugin crashed in Configure: panic: assignment to entry in nil map (main.go:"
	if got := diags.Error(); !strings.Contains(got, want) {
		t.Errorf("diagnostics %q; want them to contain %q", got, want)
	}
}

// A plugin that exits without a panic (log.Fatal's way: a line, then
// os.Exit) is quoted by its last line on stderr.
func TestExitWithoutPanicQuotesTheLastLine(t *testing.T) {
	f := newNamedFixture(t, "crasher", bins(t).crasher, "")
	m := f.start(fastOptions)
	eng := engine.New(m)
	res := scanBytes(context.Background(), eng, []byte("a header, then EXIT-ME"))
	if res.Verdict != shared.VerdictUnknown {
		t.Fatalf("%s, want unknown", res.Verdict)
	}
	want := `crasher crashed on this artifact: it exited without a crash report; its last line on stderr: "`
	if !strings.Contains(res.Reason, want) || !strings.Contains(res.Reason, `giving up on EXIT-ME"`) {
		t.Errorf("reason %q; want it to contain %q and the line", res.Reason, want)
	}
}
