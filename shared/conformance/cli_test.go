package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

func runMain(t *testing.T, resolve Resolver, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(t.Context(), args, &out, &errb, resolve)
	return out.String(), errb.String(), code
}

var summaryRe = regexp.MustCompile(`(?m)^(\d+) passed, (\d+) failed, (\d+) skipped$`)

func TestMainHealthyPlugin(t *testing.T) {
	out, errs, code := runMain(t, nil, bin("eicar"))
	if code != ExitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	// One line per check, then the tally.
	for _, c := range Checks() {
		re := regexp.MustCompile(`(?m)^(PASS|SKIP) ` + regexp.QuoteMeta(c.ID) + ` +` + string(c.Level) + ` +`)
		if !re.MatchString(out) {
			t.Errorf("no line for %s:\n%s", c.ID, out)
		}
	}
	m := summaryRe.FindStringSubmatch(out)
	if m == nil || m[2] != "0" || m[3] != "2" {
		t.Errorf("summary %q:\n%s", m, out)
	}
	if !strings.Contains(out, "\nCONFORMANT\n") {
		t.Errorf("no verdict:\n%s", out)
	}
}

func TestMainBrokenPlugin(t *testing.T) {
	out, _, code := runMain(t, nil, "-run", "^(HANDSHAKE|STDOUT)-", bin("stdout"))
	if code != ExitFailed {
		t.Errorf("exit %d, want %d", code, ExitFailed)
	}
	line := regexp.MustCompile(`(?m)^FAIL STDOUT-001 +MUST +.*: expected the handshake line as the first line on stdout; got the plugin wrote "starting the stdout plugin" to stdout.*$`)
	if !line.MatchString(out) {
		t.Errorf("no FAIL line for STDOUT-001:\n%s", out)
	}
	if m := summaryRe.FindStringSubmatch(out); m == nil || m[1] != "0" || m[2] != "2" || m[3] != "3" {
		t.Errorf("summary %q:\n%s", m, out)
	}
	if !strings.Contains(out, "NOT CONFORMANT: HANDSHAKE-001, STDOUT-001") {
		t.Errorf("no verdict:\n%s", out)
	}
}

// A SHOULD failure fails only with -strict.
func TestMainStrict(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"-run", "STDOUT-002", bin("chatty")}, ExitOK},
		{[]string{"-strict", "-run", "STDOUT-002", bin("chatty")}, ExitFailed},
	} {
		out, _, code := runMain(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(out, "FAIL STDOUT-002") {
			t.Errorf("%v: exit %d, want %d\n%s", tc.args, code, tc.code, out)
		}
	}
}

func TestMainJSON(t *testing.T) {
	out, _, code := runMain(t, nil, "-json", "-run", "^SCAN-", bin("allbenign"))
	if code != ExitFailed {
		t.Errorf("exit %d", code)
	}
	var r Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	res, ok := r.Result("SCAN-002")
	if r.OK || !ok || res.Status != Fail || res.Level != MUST || res.Expected == "" || !strings.Contains(res.Actual, "benign") {
		t.Errorf("report: %+v", r)
	}
	if r.Plugin.Name != "allbenign" || r.Failed != 1 || r.Passed+r.Failed+r.Skipped != len(r.Results) {
		t.Errorf("report: %+v", r)
	}
}

func TestMainResolveAndFlags(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "up")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var gotFile, gotName string
	resolve := func(file, name string) (Config, error) {
		gotFile, gotName = file, name
		return Config{Plugin: bin("backend"), PluginConfig: []byte(`{"backend": "/nonexistent"}`)}, nil
	}
	// -plugin-config replaces the resolved config; -stop-backend runs a
	// shell command.
	out, errs, code := runMain(t, resolve,
		"-plugin", "backend",
		"-plugin-config", `{"backend": "`+marker+`"}`,
		"-stop-backend", "rm "+marker,
		"-run", "HEALTH-002|BACKEND")
	if code != ExitOK || gotFile != "engine.hcl" || gotName != "backend" {
		t.Fatalf("exit %d, resolved (%q, %q)\n%s%s", code, gotFile, gotName, out, errs)
	}
	for _, id := range []string{"HEALTH-002", "BACKEND-001", "BACKEND-002"} {
		if !strings.Contains(out, "PASS "+id) {
			t.Errorf("%s did not pass:\n%s", id, out)
		}
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stop command did not run: %v", err)
	}

	_, errs, code = runMain(t, func(string, string) (Config, error) { return Config{}, errors.New("no plugin \"x\"") }, "-config", "e.hcl", "-plugin", "x")
	if code != ExitUsage || !strings.Contains(errs, `no plugin "x"`) {
		t.Errorf("resolve error: exit %d, %q", code, errs)
	}
}

func TestMainUsage(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		resolve Resolver
		want    string
	}{
		{nil, nil, "give a plugin binary PATH"},
		{[]string{"a", "b"}, nil, "one plugin at a time"},
		{[]string{"-config", "e.hcl", "-plugin", "x"}, nil, "-config is not supported by this build"},
		{[]string{"-config", "e.hcl", "-plugin", "x", "path"}, nil, "not both"},
		{[]string{"-plugin-config", "[1]", "p"}, nil, "not a JSON object"},
		{[]string{"-run", "(", "p"}, nil, "-run"},
		{[]string{"-large-size", "lots", "p"}, nil, "-large-size"},
		{[]string{"-no-such-flag"}, nil, "flag provided but not defined"},
	} {
		_, errs, code := runMain(t, tc.resolve, tc.args...)
		if code != ExitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, ExitUsage, tc.want)
		}
	}
}

func TestMainList(t *testing.T) {
	out, _, code := runMain(t, nil, "-list")
	if code != ExitOK || strings.Count(out, "\n") != len(Checks()) || !strings.Contains(out, "CANCEL-001") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	out, _, _ = runMain(t, nil, "-list", "-json")
	var checks []CheckInfo
	if err := json.Unmarshal([]byte(out), &checks); err != nil || len(checks) != len(Checks()) {
		t.Errorf("-list -json: %v\n%s", err, out)
	}
}

// A run that did not finish is not a pass: cancelled before the first
// check, it exits ExitIncomplete, never prints CONFORMANT, and names every
// check that did not run.
func TestMainInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var out bytes.Buffer
	code := Main(ctx, []string{bin("eicar")}, &out, &bytes.Buffer{}, nil)
	s := out.String()
	if code != ExitIncomplete || strings.Contains(s, "\nCONFORMANT\n") {
		t.Errorf("exit %d, want %d:\n%s", code, ExitIncomplete, s)
	}
	var ids []string
	for _, c := range Checks() {
		ids = append(ids, c.ID)
	}
	if want := "INCOMPLETE: the run was interrupted; not run: " + strings.Join(ids, ", ") + "\n"; !strings.Contains(s, want) {
		t.Errorf("want %q in:\n%s", want, s)
	}

	var js bytes.Buffer
	code = Main(ctx, []string{"-json", bin("eicar")}, &js, &bytes.Buffer{}, nil)
	var r Report
	if err := json.Unmarshal(js.Bytes(), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, js.String())
	}
	if code != ExitIncomplete || r.OK || !r.Interrupted || strings.Join(r.NotRun, ", ") != strings.Join(ids, ", ") {
		t.Errorf("-json: exit %d, ok %v, interrupted %v, not run %v", code, r.OK, r.Interrupted, r.NotRun)
	}
}

// cancelAfter cancels the run once its text output has shown n check
// lines: an interrupt in the middle of the suite, at a known point.
type cancelAfter struct {
	bytes.Buffer
	n      int
	cancel context.CancelFunc
}

func (w *cancelAfter) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("PASS ")) || bytes.HasPrefix(p, []byte("FAIL ")) || bytes.HasPrefix(p, []byte("SKIP ")) {
		if w.n--; w.n == 0 {
			w.cancel()
		}
	}
	return w.Buffer.Write(p)
}

// Interrupted after two checks passed, the run still fails and lists what
// was left, from the third check on.
func TestMainInterruptedMidway(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &cancelAfter{n: 2, cancel: cancel}
	code := Main(ctx, []string{"-run", "^(HANDSHAKE|STDOUT|INFO)-", bin("eicar")}, out, &bytes.Buffer{}, nil)
	s := out.String()
	var ids []string
	for _, c := range Checks() {
		if regexp.MustCompile("^(HANDSHAKE|STDOUT|INFO)-").MatchString(c.ID) {
			ids = append(ids, c.ID)
		}
	}
	if len(ids) < 3 {
		t.Fatalf("the filter picks %v", ids)
	}
	if code != ExitIncomplete || strings.Contains(s, "\nCONFORMANT\n") {
		t.Errorf("exit %d, want %d:\n%s", code, ExitIncomplete, s)
	}
	if want := "INCOMPLETE: the run was interrupted; not run: " + strings.Join(ids[2:], ", ") + "\n"; !strings.Contains(s, want) {
		t.Errorf("want %q in:\n%s", want, s)
	}
}

// A check the interrupt cuts short says nothing about the plugin: it is
// shown as skipped and listed as not run, never as a PASS or a FAIL
// beside "not run". The plugin here is a script that tells the test it
// was launched, waits for the go-ahead the test gives once it has
// cancelled the run, then becomes the eicar plugin: HANDSHAKE-001 is
// running when the interrupt comes.
func TestMainInterruptedDuringACheck(t *testing.T) {
	dir := t.TempDir()
	started, proceed := filepath.Join(dir, "started"), filepath.Join(dir, "go")
	for _, p := range []string{started, proceed} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(dir, "plugin")
	body := fmt.Sprintf("#!/bin/sh\necho started > %q\nread x < %q\nexec %q\n", started, proceed, bin("eicar"))
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// Opened read-write, the FIFO never blocks the test nor gives the
	// script an end of file before the go-ahead.
	goAhead, err := os.OpenFile(proceed, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer goAhead.Close()
	go func() {
		f, err := os.Open(started) // until the script writes
		if err != nil {
			return
		}
		_, _ = io.ReadAll(f)
		f.Close()
		cancel()
		_, _ = goAhead.WriteString("go\n")
	}()
	var out bytes.Buffer
	code := Main(ctx, []string{"-run", "^HANDSHAKE-001$", script}, &out, &bytes.Buffer{}, nil)
	s := out.String()
	if code != ExitIncomplete {
		t.Errorf("exit %d, want %d:\n%s", code, ExitIncomplete, s)
	}
	for _, bad := range []string{"PASS HANDSHAKE-001", "FAIL HANDSHAKE-001", "NOT CONFORMANT", "\nCONFORMANT\n"} {
		if strings.Contains(s, bad) {
			t.Errorf("%q in the report of a run interrupted during the check:\n%s", bad, s)
		}
	}
	for _, want := range []string{"SKIP HANDSHAKE-001", "0 passed, 0 failed, 1 skipped", "not run: HANDSHAKE-001\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("want %q in:\n%s", want, s)
		}
	}
}

// -samples adds a folder of samples named by verdict: one the plugin
// misses fails SCAN-002 by its name, and HOSTILE-001 derives inputs from
// them.
func TestMainSamplesFolder(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string, b []byte) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	eicar := `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`
	write("malicious/eicar.com", []byte(eicar))
	write("benign/docs/readme.txt", []byte("an ordinary readme\n"))
	out, errs, code := runMain(t, nil, "-samples", dir, "-run", "^(SCAN-00[12]|HOSTILE-001)$", bin("eicar"))
	if code != ExitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "benign samples: 3, all benign") {
		t.Errorf("the folder's benign sample was not scanned:\n%s", out)
	}

	write("malicious/missed.bin", []byte("nothing the eicar plugin knows"))
	out, _, code = runMain(t, nil, "-samples", dir, "-run", "^SCAN-002$", bin("eicar"))
	if code != ExitFailed || !strings.Contains(out, `"malicious/missed.bin"`) {
		t.Errorf("exit %d, want %d and SCAN-002 naming malicious/missed.bin:\n%s", code, ExitFailed, out)
	}

	// A folder named for no verdict is refused rather than left out.
	write("malware/x.bin", []byte("x"))
	_, errs, code = runMain(t, nil, "-samples", dir, bin("eicar"))
	if code != ExitUsage || !strings.Contains(errs, "want only folders named malicious, benign or suspicious") {
		t.Errorf("exit %d, want %d with a reason; stderr:\n%s", code, ExitUsage, errs)
	}
}
