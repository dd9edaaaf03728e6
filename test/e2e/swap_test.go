//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/internal/samples"
	"github.com/microengine/microengine/internal/testproc"
)

type pluginStatus struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	PID       int    `json:"pid"`
	SHA256    string `json:"sha256"`
	Up        bool   `json:"up"`
	Healthy   bool   `json:"healthy"`
	SwapError string `json:"swap_error"`
	Restarts  int    `json:"restarts"`
}

// plugins asks the running engine, through `microengine plugins -json` and
// its admin endpoint, what it runs.
func (e *engineProc) plugins() map[string]pluginStatus {
	e.t.Helper()
	out, err := exec.Command(bins.host, "plugins", "-json", "-config", e.cfg).Output()
	if err != nil && len(out) == 0 {
		e.t.Fatalf("microengine plugins: %v", err)
	}
	var rep struct {
		Source  string         `json:"source"`
		PID     int            `json:"pid"`
		Plugins []pluginStatus `json:"plugins"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		e.t.Fatalf("microengine plugins -json: %v\n%s", err, out)
	}
	if rep.Source != "running engine" || rep.PID != e.cmd.Process.Pid {
		e.t.Fatalf("microengine plugins did not ask the running engine (pid %d): %+v", e.cmd.Process.Pid, rep)
	}
	m := map[string]pluginStatus{}
	for _, p := range rep.Plugins {
		m[p.Name] = p
	}
	return m
}

func (e *engineProc) waitVersion(plugin, version string, within time.Duration) (pluginStatus, time.Duration) {
	e.t.Helper()
	start := time.Now()
	for {
		st := e.plugins()[plugin]
		if st.Version == version && st.Up {
			return st, time.Since(start)
		}
		if time.Since(start) > within {
			e.t.Fatalf("%s not at version %s within %s: %+v", plugin, version, within, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// driver sends bounties continuously and remembers what each must get.
type driver struct {
	mk   *marketplace
	eng  *engineProc
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	sent map[string]string // key → expected verdict
}

func startDriver(mk *marketplace, eng *engineProc, every time.Duration) *driver {
	d := &driver{mk: mk, eng: eng, stop: make(chan struct{}), sent: map[string]string{}}
	set := []struct {
		content []byte
		verdict string
	}{
		{samples.EICAR(), "malicious"},
		{samples.Marker("ALPHA"), "malicious"},
		{[]byte("clean"), "benign"},
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-d.stop:
				return
			case <-t.C:
			}
			s := set[i%len(set)]
			// Unique bytes each time: clamd caches results of identical content.
			content := append(append([]byte(nil), s.content...), []byte(fmt.Sprintf("\n%d\n", i))...)
			if s.verdict == "malicious" && i%len(set) == 0 {
				content = s.content // EICAR matches by hash: only the exact file
			}
			b, key := mk.newBounty(content, 20*time.Second)
			d.mu.Lock()
			d.sent[key] = s.verdict
			d.mu.Unlock()
			d.eng.sendBounty(b)
		}
	}()
	return d
}

// answered is how many of the driver's bounties have an answer.
func (d *driver) answered() int {
	d.mu.Lock()
	keys := make([]string, 0, len(d.sent))
	for k := range d.sent {
		keys = append(keys, k)
	}
	d.mu.Unlock()
	n := 0
	for _, k := range keys {
		if len(d.mk.answersFor(k)) > 0 {
			n++
		}
	}
	return n
}

// waitAnswered waits until n of the driver's bounties have an answer.
func (d *driver) waitAnswered(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for d.answered() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d bounties answered after 20s, want %d", d.answered(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// finish stops sending and checks every bounty got its right answer, and
// only one: a swap must cost no scan, and must not make the engine answer
// a bounty twice (a second answer, even the same, means the engine lost
// track of the first).
func (d *driver) finish(t *testing.T) {
	t.Helper()
	close(d.stop)
	d.wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	wrong, repeated := 0, 0
	for key := range d.sent {
		d.mk.waitAnswer(key, 20*time.Second)
	}
	for key, want := range d.sent {
		as := d.mk.answersFor(key)
		if len(as) > 1 {
			repeated++
			if repeated <= 5 {
				t.Errorf("bounty %s answered %d times: %s", key, len(as), verdicts(as))
			}
		}
		if a := as[0]; a.Verdict != want {
			wrong++
			if wrong <= 5 {
				t.Errorf("bounty %s: %s, want %s (%s)", key, a.Verdict, want, a.Metadata)
			}
		}
	}
	if wrong > 0 || repeated > 0 {
		t.Errorf("of %d bounties under load, %d answered wrong, %d more than once", len(d.sent), wrong, repeated)
	}
	t.Logf("%d bounties under load, %d wrong, %d answered more than once", len(d.sent), wrong, repeated)
}

func verdicts(as []answer) string {
	var vs []string
	for _, a := range as {
		vs = append(vs, a.Verdict)
	}
	return strings.Join(vs, ", ")
}

func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for testproc.Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive after %s", pid, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHotSwapUnderSteadyLoad replaces the eicar binary, then the clamav
// one, while bounties keep arriving; then tries broken replacements.
func TestHotSwapUnderSteadyLoad(t *testing.T) {
	clamd := devclamd.StartT(t, devclamd.Options{})
	mk := newMarketplace(t)
	dir := engineDir(t, clamd, "")
	eng := startEngine(t, dir)
	before := eng.plugins()
	d := startDriver(mk, eng, 20*time.Millisecond)

	// Each swap lands while bounties are being answered.
	d.waitAnswered(t, 20)
	install(t, bins.eicarV2, filepath.Join(dir, "plugins", "microengine-plugin-eicar"))
	st, took := eng.waitVersion("eicar", "2.0.0", 5*time.Second)
	t.Logf("eicar 2.0.0 serving %s after the binary was replaced (pid %d → %d)", took.Round(time.Millisecond), before["eicar"].PID, st.PID)

	d.waitAnswered(t, d.answered()+20)
	install(t, bins.clamavV2, filepath.Join(dir, "plugins", "microengine-plugin-clamav"))
	st, took = eng.waitVersion("clamav", "9.9.9", 5*time.Second)
	t.Logf("clamav 9.9.9 serving %s after the binary was replaced (pid %d → %d)", took.Round(time.Millisecond), before["clamav"].PID, st.PID)

	d.waitAnswered(t, d.answered()+20)
	d.finish(t)
	waitGone(t, before["eicar"].PID, 10*time.Second)
	waitGone(t, before["clamav"].PID, 10*time.Second)

	// A broken replacement: the running process keeps serving, the failure
	// is reported by `microengine plugins` and /metrics.
	serving := eng.plugins()["clamav"]
	d = startDriver(mk, eng, 50*time.Millisecond)
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("#!/bin/sh\nexit 7\n"), 0o755)
	install(t, garbage, filepath.Join(dir, "plugins", "microengine-plugin-clamav"))
	deadline := time.Now().Add(10 * time.Second)
	for eng.plugins()["clamav"].SwapError == "" {
		if time.Now().After(deadline) {
			t.Fatalf("a broken replacement was not reported: %+v", eng.plugins()["clamav"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.waitAnswered(t, d.answered()+5) // answered by the process that stayed
	d.finish(t)
	if now := eng.plugins()["clamav"]; now.PID != serving.PID || now.Version != "9.9.9" || !now.Up {
		t.Fatalf("after a broken replacement: %+v; want pid %d still serving", now, serving.PID)
	}
	if m := eng.metric("microengine_plugin_swap_failures_total"); !strings.Contains(m, `plugin="clamav"`) {
		t.Errorf("swap failure not in /metrics: %q", m)
	}
}

// TestNoPluginOutlivesTheEngine kills the engine with SIGKILL and checks its
// plugin processes are gone within a few seconds.
func TestNoPluginOutlivesTheEngine(t *testing.T) {
	clamd := devclamd.StartT(t, devclamd.Options{})
	eng := startEngine(t, engineDir(t, clamd, ""))
	var pids []int
	for _, p := range eng.plugins() {
		pids = append(pids, p.PID)
	}
	if len(pids) != 2 {
		t.Fatalf("want 2 plugin processes, got %v", pids)
	}
	eng.kill9()
	for _, pid := range pids {
		waitGone(t, pid, 3*time.Second)
	}

	// And after SIGTERM, none either.
	eng = startEngine(t, engineDir(t, clamd, ""))
	pids = pids[:0]
	for _, p := range eng.plugins() {
		pids = append(pids, p.PID)
	}
	eng.cmd.Process.Signal(syscall.SIGTERM)
	<-eng.done
	for _, pid := range pids {
		waitGone(t, pid, 3*time.Second)
	}
}

// TestReloadCommand runs an engine with swap = "reload": a new binary is
// ignored until `microengine reload`, and a broken engine.hcl is refused
// whole with the running plugins untouched.
func TestReloadCommand(t *testing.T) {
	clamd := devclamd.StartT(t, devclamd.Options{})
	dir := engineDir(t, clamd, "")
	cfgPath := filepath.Join(dir, "engine.hcl")
	src, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	withSwap := strings.Replace(string(src), "engine {\n", "engine {\n  swap = \"reload\"\n", 1)
	os.WriteFile(cfgPath, []byte(withSwap), 0o644)
	eng := startEngine(t, dir)
	before := eng.plugins()["eicar"]

	install(t, bins.eicarV2, filepath.Join(dir, "plugins", "microengine-plugin-eicar"))
	time.Sleep(1500 * time.Millisecond)
	if now := eng.plugins()["eicar"]; now.Version != "1.0.0" || now.PID != before.PID {
		t.Fatalf("swap = \"reload\" swapped on its own: %+v", now)
	}

	// A broken engine.hcl: refused, nothing changes.
	os.WriteFile(cfgPath, []byte(withSwap+"\nplugin \"eicar\" {\n  path = \"./nope\"\n}\n"), 0o644)
	out, err := exec.Command(bins.host, "reload", "-config", cfgPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "engine.hcl:") {
		t.Fatalf("reload with a broken engine.hcl: %v\n%s\nwant a refusal with file:line", err, out)
	}
	os.WriteFile(cfgPath, []byte(withSwap), 0o644)
	if now := eng.plugins()["eicar"]; now.PID != before.PID {
		t.Fatalf("a refused reload changed the running plugin: %+v", now)
	}
	out, err = exec.Command(bins.host, "reload", "-config", cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("microengine reload: %v\n%s", err, out)
	}
	if now := eng.plugins()["eicar"]; now.Version != "2.0.0" || now.PID == before.PID {
		t.Fatalf("after microengine reload: %+v; want 2.0.0 in a new process", now)
	}
	waitGone(t, before.PID, 10*time.Second)
}
