package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/launch"
)

// binDir holds the plugins TestMain builds: the eicar plugin (the
// reference healthy plugin) and the testdata plugins.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	// The helper process of TestRunEntryPoint reuses the parent's binaries.
	if dir := os.Getenv("CONFORMANCE_TEST_BINDIR"); dir != "" {
		binDir = dir
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "conformance-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	// testdata is invisible to ./... patterns, so name it explicitly; one
	// go build for all of them shares the work. -o DIR/ names each binary
	// after its folder (the eicar plugin is DIR/eicar).
	args := []string{"build", "-o", dir + "/", "../../plugins/eicar", "./testdata/broken/...", "./testdata/plugins/..."}
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go %s: %v\n%s", strings.Join(args, " "), err, out)
		return 1
	}
	return m.Run()
}

func bin(name string) string {
	return filepath.Join(binDir, name)
}

// statuses maps each check id to its status.
func statuses(r Report) map[string]Status {
	m := map[string]Status{}
	for _, c := range r.Results {
		m[c.ID] = c.Status
	}
	return m
}

func idsWith(r Report, st Status) []string {
	var ids []string
	for _, c := range r.Results {
		if c.Status == st {
			ids = append(ids, c.ID)
		}
	}
	sort.Strings(ids)
	return ids
}

func dump(r Report) string {
	var b bytes.Buffer
	_ = r.WriteText(&b)
	return b.String()
}

func mustCheck(t *testing.T, cfg Config, filter *regexp.Regexp) Report {
	t.Helper()
	r, err := Check(t.Context(), cfg, filter)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return r
}

// TestConformanceEicar is the go test entry point on the reference plugin,
// as a plugin's own test would use it.
func TestConformanceEicar(t *testing.T) {
	Run(t, Config{Plugin: bin("eicar"), Strict: true})
}

// The reference plugin passes every check; only the backend checks are
// skipped (it has no backend), and the suite stays fast.
func TestEicarPassesEverything(t *testing.T) {
	start := time.Now()
	r := mustCheck(t, Config{Plugin: bin("eicar")}, nil)
	took := time.Since(start)
	if failed := idsWith(r, Fail); len(failed) > 0 || !r.OK {
		t.Fatalf("failed %v:\n%s", failed, dump(r))
	}
	if skipped := idsWith(r, Skip); !slices.Equal(skipped, []string{"BACKEND-001", "BACKEND-002"}) {
		t.Errorf("skipped %v, want only the BACKEND checks\n%s", skipped, dump(r))
	}
	if len(r.Results) != len(Checks()) {
		t.Errorf("%d results for %d checks", len(r.Results), len(Checks()))
	}
	if r.Plugin.Name != "eicar" || r.Plugin.Version == "" || len(r.Plugin.SHA256) != 64 {
		t.Errorf("plugin summary %+v", r.Plugin)
	}
	if took > 20*time.Second {
		t.Errorf("the suite took %s on a healthy plugin", took)
	}
	t.Logf("%s in %s", r.Summary(), took.Round(time.Millisecond))
}

// Each broken plugin fails exactly the checks for its fault, with a
// message that says what was wrong; a plugin with a backend passes the
// backend checks that the eicar plugin skips.
func TestBrokenPlugins(t *testing.T) {
	type want struct {
		failed []string
		// says: for a failed check, what its message must contain.
		says map[string][]string
		// also: checks that must pass, for instance after a relaunch.
		also []string
		ok   bool
		max  time.Duration
	}
	backend := func(t *testing.T) (Config, string) {
		marker := filepath.Join(t.TempDir(), "backend-up")
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(map[string]string{"backend": marker})
		return Config{
			PluginConfig:   raw,
			StopBackend:    func(context.Context) error { return os.Remove(marker) },
			BackendTimeout: time.Second,
		}, marker
	}
	sum, err := launch.FileSHA256(bin("eicar"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		plugin string
		cfg    func(t *testing.T) Config
		want   want
	}{
		{"stdout", "stdout", nil, want{
			failed: []string{"HANDSHAKE-001", "STDOUT-001"},
			says: map[string][]string{
				"STDOUT-001":    {`"starting the stdout plugin"`, "before its handshake line", "Unrecognized remote plugin message"},
				"HANDSHAKE-001": {"Unrecognized remote plugin message"},
			},
		}},
		{"wrongversion", "wrongversion", nil, want{
			failed: []string{"HANDSHAKE-001", "HANDSHAKE-002"},
			says:   map[string][]string{"HANDSHAKE-002": {"serves plugin protocol version 2", "the host speaks version 1"}},
			also:   []string{"STDOUT-001", "HANDSHAKE-003"},
		}},
		{"nohandshake", "nohandshake", func(*testing.T) Config { return Config{StartTimeout: time.Second} }, want{
			failed: []string{"HANDSHAKE-001", "HANDSHAKE-003"},
			says:   map[string][]string{"HANDSHAKE-003": {"no handshake line within the start timeout of 1s", "shared.Serve"}},
			max:    4 * time.Second,
		}},
		{"allbenign", "allbenign", nil, want{
			failed: []string{"SCAN-002"},
			says:   map[string][]string{"SCAN-002": {`sample "eicar", declared malicious: benign`}},
		}},
		// The guard in shared.Serve turns its benign on a stream of the
		// wrong length into unknown: SIZE-001 failed with the guard's
		// check of the reader's error removed.
		{"ignoresize: the shim's guard holds", "ignoresize", nil, want{
			also: []string{"SIZE-001", "SIZE-002", "SCAN-001", "SCAN-002"},
			ok:   true,
		}},
		{"nocancel", "nocancel", nil, want{
			failed: []string{"CANCEL-001", "DEADLINE-001"},
			says: map[string][]string{
				"CANCEL-001":   {"still working on the cancelled scan", "Scan(plain text, right after the cancelled scan) did not answer within"},
				"DEADLINE-001": {"still working on the expired scan"},
			},
			// The wedged plugin was replaced: later checks pass.
			also: []string{"STDOUT-002"},
		}},
		{"leakfd", "leakfd", nil, want{
			failed: []string{"REF-002"},
			says:   map[string][]string{"REF-002": {"still holds", "descriptor(s) of artifacts it has answered"}},
			also:   []string{"REF-001"},
		}},
		{"crashlarge", "crashlarge", nil, want{
			failed: []string{"LARGE-001"},
			says:   map[string][]string{"LARGE-001": {"the plugin process exited during this check", "Scan(64 MiB of noise)", "exit status 2"}},
			// Relaunched for the checks after the crash.
			also: []string{"URL-001", "CONFIG-002", "CONCURRENCY-001", "CANCEL-001", "REF-001", "REF-002"},
		}},
		// Well-formed content never trips it: only HOSTILE-001 finds the
		// crash, and quotes the panic and the line instead of a dump.
		{"elfparser", "elfparser", nil, want{
			failed: []string{"HOSTILE-001"},
			says: map[string][]string{"HOSTILE-001": {
				"the plugin crashed on the 4 bytes of the ELF magic: panic: runtime error: slice bounds out of range [:40] with capacity 4 (fakeplugin.go:",
			}},
			also: []string{"SCAN-001", "SCAN-002", "CHUNK-004", "LARGE-001", "CONFIG-002", "CONCURRENCY-001"},
		}},
		// The process dies during an input that alone does not crash
		// it: the crash is reported as such, not pinned on that input.
		{"latecrash", "latecrash", nil, want{
			failed: []string{"HOSTILE-001"},
			says: map[string][]string{"HOSTILE-001": {
				"which alone does not crash it",
				"panic: assignment to entry in nil map (fakeplugin.go:",
			}},
			also: []string{"SCAN-001", "SCAN-002", "CONFIG-002", "CONCURRENCY-001"},
		}},
		{"chatty: a SHOULD failure", "chatty", nil, want{
			failed: []string{"STDOUT-002"},
			says:   map[string][]string{"STDOUT-002": {"wrote", "bytes to stdout after the handshake", "scanning"}},
			ok:     true,
		}},
		{"deadbackend", "deadbackend", func(t *testing.T) Config { c, _ := backend(t); return c }, want{
			failed: []string{"BACKEND-001", "BACKEND-002"},
			says: map[string][]string{
				"BACKEND-001": {`Health() still reported healthy ("ok") 1s after the backend was stopped`},
				"BACKEND-002": {`"plain text": benign with the backend down`},
			},
		}},
		{"backend: healthy, backend checks pass", "backend", func(t *testing.T) Config { c, _ := backend(t); return c }, want{
			also: []string{"BACKEND-001", "BACKEND-002", "HEALTH-002"},
			ok:   true,
		}},
		{"backend: without a config", "backend", nil, want{
			failed: []string{"CONFIG-001"},
			says:   map[string][]string{"CONFIG-001": {"backend: required", "-plugin-config"}},
		}},
		{"opensocket", "opensocket", nil, want{
			failed: []string{"HANDSHAKE-001"},
			says:   map[string][]string{"HANDSHAKE-001": {"not in its private directory", "go-plugin v1.5 or later"}},
		}},
		{"eicar: sha256 pin mismatch", "eicar", func(*testing.T) Config { return Config{SHA256: strings.Repeat("0", 64)} }, want{
			failed: []string{"HANDSHAKE-001"},
			says:   map[string][]string{"HANDSHAKE-001": {"checksums did not match"}},
		}},
		{"eicar: sha256 pin match", "eicar", func(*testing.T) Config { return Config{SHA256: sum} }, want{
			also: []string{"HANDSHAKE-001", "SCAN-002"},
			ok:   true,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var cfg Config
			if tc.cfg != nil {
				cfg = tc.cfg(t)
			}
			cfg.Plugin = bin(tc.plugin)
			start := time.Now()
			r := mustCheck(t, cfg, nil)
			took := time.Since(start)
			failed := idsWith(r, Fail)
			want := append([]string(nil), tc.want.failed...)
			sort.Strings(want)
			if !slices.Equal(failed, want) {
				t.Errorf("failed %v, want %v\n%s", failed, want, dump(r))
			}
			for id, phrases := range tc.want.says {
				res, _ := r.Result(id)
				for _, p := range phrases {
					if !strings.Contains(res.Actual, p) {
						t.Errorf("%s says %q, want it to contain %q", id, res.Actual, p)
					}
				}
			}
			st := statuses(r)
			for _, id := range tc.want.also {
				if st[id] != Pass {
					t.Errorf("%s: %s, want PASS\n%s", id, st[id], dump(r))
				}
			}
			if r.OK != tc.want.ok {
				t.Errorf("Report.OK = %v, want %v", r.OK, tc.want.ok)
			}
			if tc.want.max > 0 && took > tc.want.max {
				t.Errorf("the suite took %s, want at most %s", took, tc.want.max)
			}
		})
	}
}

// A check that cannot run because the plugin did not start is skipped,
// citing the check that failed; with a filter that leaves that check out,
// the first check that meets the failure reports it instead.
func TestSetupFailureAttribution(t *testing.T) {
	r := mustCheck(t, Config{Plugin: bin("stdout")}, regexp.MustCompile(`^SCAN-00[12]$`))
	if len(r.Results) != 2 {
		t.Fatalf("%d results, want 2\n%s", len(r.Results), dump(r))
	}
	first, second := r.Results[0], r.Results[1]
	if first.ID != "SCAN-001" || first.Status != Fail || !strings.Contains(first.Actual, "Unrecognized remote plugin message") {
		t.Errorf("first: %s", first.Line())
	}
	if second.Status != Skip || !strings.Contains(second.Actual, "see SCAN-001") {
		t.Errorf("second: %s", second.Line())
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "no plugin binary"},
		{Config{Plugin: "x", PluginConfig: []byte(`[1]`)}, "not a JSON object"},
		{Config{Plugin: "x", PluginConfig: []byte(`null`)}, "not a JSON object"},
		{Config{Plugin: "x", Samples: []shared.Sample{{Name: "s", Verdict: "evil"}}}, `unknown verdict "evil"`},
	} {
		_, err := Check(t.Context(), tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
	// A missing binary is the plugin's failure to start, not a usage error.
	r := mustCheck(t, Config{Plugin: filepath.Join(t.TempDir(), "missing")}, regexp.MustCompile("HANDSHAKE-001"))
	if res, _ := r.Result("HANDSHAKE-001"); res.Status != Fail || !strings.Contains(res.Actual, "no such file") {
		t.Errorf("missing binary: %s", res.Line())
	}
}

// Config.Samples adds samples; PluginConfigFor sees the plugin's Info.
func TestConfigSamplesAndPluginConfigFor(t *testing.T) {
	var seen shared.Info
	cfg := Config{
		Plugin: bin("eicar"),
		Samples: []shared.Sample{{
			Name: "eicar-then-newline", Content: []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*` + "\n"),
			Verdict: shared.VerdictMalicious, MalwareFamily: "Not-The-Family",
		}},
		PluginConfigFor: func(_ context.Context, info shared.Info) ([]byte, error) {
			seen = info
			return []byte(`{"strict": true}`), nil
		},
	}
	r := mustCheck(t, cfg, regexp.MustCompile(`^(CONFIG-001|SCAN-002)$`))
	if seen.Name != "eicar" {
		t.Errorf("PluginConfigFor saw %+v", seen)
	}
	res, _ := r.Result("SCAN-002")
	if res.Status != Fail || !strings.Contains(res.Actual, `sample "eicar-then-newline": family "EICAR-Test-File", declared "Not-The-Family"`) {
		t.Errorf("SCAN-002: %s", res.Line())
	}

	cfg.PluginConfigFor = func(context.Context, shared.Info) ([]byte, error) { return nil, errors.New("no such block") }
	r = mustCheck(t, cfg, regexp.MustCompile(`^CONFIG-001$`))
	if res, _ := r.Result("CONFIG-001"); res.Status != Fail || !strings.Contains(res.Actual, "no such block") {
		t.Errorf("CONFIG-001: %s", res.Line())
	}
}

// TestRunEntryPoint runs Run in a child test process against a broken
// plugin and reads go test's verdicts: a failed MUST check fails its
// subtest, a failed SHOULD check only logs, a skipped check skips.
func TestRunEntryPoint(t *testing.T) {
	if plugin := os.Getenv("CONFORMANCE_TEST_RUN_PLUGIN"); plugin != "" {
		t.Skip("helper only")
	}
	for _, tc := range []struct {
		plugin string
		want   []string
		absent []string
	}{
		{"allbenign", []string{"--- FAIL: TestRunHelper/SCAN-002", "--- PASS: TestRunHelper/SCAN-001", "--- SKIP: TestRunHelper/BACKEND-001", "expected: malicious"}, nil},
		{"chatty", []string{"--- PASS: TestRunHelper/STDOUT-002", "SHOULD not met", "PASS\n"}, []string{"--- FAIL"}},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRunHelper$", "-test.v")
		cmd.Env = append(os.Environ(), "CONFORMANCE_TEST_RUN_PLUGIN="+bin(tc.plugin), "CONFORMANCE_TEST_BINDIR="+binDir)
		out, _ := cmd.CombinedOutput()
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.plugin, w, out)
			}
		}
		for _, a := range tc.absent {
			if strings.Contains(string(out), a) {
				t.Errorf("%s: output has %q:\n%s", tc.plugin, a, out)
			}
		}
	}
}

func TestRunHelper(t *testing.T) {
	plugin := os.Getenv("CONFORMANCE_TEST_RUN_PLUGIN")
	if plugin == "" {
		t.Skip("run by TestRunEntryPoint")
	}
	Run(t, Config{Plugin: plugin})
}

func TestChecksAreWellFormed(t *testing.T) {
	seen := map[string]bool{}
	idRe := regexp.MustCompile(`^[A-Z]+-\d{3}$`)
	for _, c := range Checks() {
		if !idRe.MatchString(c.ID) || seen[c.ID] {
			t.Errorf("bad or duplicate id %q", c.ID)
		}
		seen[c.ID] = true
		if c.Level != MUST && c.Level != SHOULD {
			t.Errorf("%s: level %q", c.ID, c.Level)
		}
		if c.Requirement == "" || c.Expected == "" {
			t.Errorf("%s: no requirement or expectation", c.ID)
		}
	}
	// The destructive checks run last.
	checks := Checks()
	if last := checks[len(checks)-1].ID; !strings.HasPrefix(last, "BACKEND-") {
		t.Errorf("last check %s, want a BACKEND check", last)
	}
}

func TestLineIsOneLine(t *testing.T) {
	r := CheckResult{
		CheckInfo: CheckInfo{ID: "X-001", Level: MUST, Requirement: "req", Expected: "exp"},
		Status:    Fail, Actual: "line one\n\n  line two  \n", Duration: 1500 * time.Microsecond,
	}
	if got, want := r.Line(), "FAIL X-001         MUST   req: expected exp; got line one | line two (2ms)"; got != want {
		t.Errorf("Line() = %q, want %q", got, want)
	}
}

func TestTailBuffer(t *testing.T) {
	tb := newTailBuffer()
	for i := range 100 {
		fmt.Fprintf(tb, "line %d\n", i)
	}
	_, _ = tb.Write([]byte("partial"))
	_, _ = tb.Write([]byte(" end\n"))
	got := tb.Last(3)
	if want := []string{"line 98", "line 99", "partial end"}; !slices.Equal(got, want) {
		t.Errorf("Last(3) = %q, want %q", got, want)
	}
}
