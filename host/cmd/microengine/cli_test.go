package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/testbin"
	"github.com/microengine/microengine/internal/testproc"
)

const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

type builtBins struct {
	host, eicar, clamav, stdout, wrongVersion string
}

var (
	buildOnce sync.Once
	bins      builtBins
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func build(t *testing.T) builtBins {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "cli-test-")
		if buildErr != nil {
			return
		}
		for _, b := range []struct {
			dst *string
			pkg string
		}{
			{&bins.host, "./host/cmd/microengine"},
			{&bins.eicar, "./plugins/eicar"},
			{&bins.clamav, "./plugins/clamav"},
			{&bins.stdout, "./shared/conformance/testdata/broken/stdout"},
			{&bins.wrongVersion, "./shared/conformance/testdata/broken/wrongversion"},
		} {
			if *b.dst, buildErr = testbin.Build(binDir, filepath.Base(b.pkg), b.pkg); buildErr != nil {
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bins
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs the real host binary and returns stdout, stderr and the exit code.
func run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(build(t).host, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func eicarConfig(t *testing.T, dir, extra string) string {
	return writeFile(t, dir, "engine.hcl", fmt.Sprintf("plugin \"eicar\" {\n  path = %q\n%s}\n", build(t).eicar, extra))
}

func TestScanOutputAndExitCodes(t *testing.T) {
	dir := t.TempDir()
	cfg := eicarConfig(t, dir, "")
	bad := writeFile(t, dir, "eicar.com", eicar)
	clean := writeFile(t, dir, "clean.txt", "nothing to see\n")

	out, _, code := run(t, "", "scan", "-config", cfg, bad, clean)
	want := bad + ": EICAR-Test-File FOUND\n" + clean + ": OK\n"
	if out != want || code != 1 {
		t.Fatalf("scan eicar+clean: exit %d, output\n%s\nwant exit 1 and\n%s", code, out, want)
	}
	if out, _, code = run(t, "", "scan", "-config", cfg, clean); code != 0 {
		t.Fatalf("scan clean: exit %d (%s), want 0", code, out)
	}
	out, _, code = run(t, "", "scan", "-config", cfg, filepath.Join(dir, "missing"))
	if code != 2 || !strings.Contains(out, "UNKNOWN (") {
		t.Fatalf("scan missing file: exit %d, %q; want exit 2 and UNKNOWN (reason)", code, out)
	}

	// stdin, as JSON: one compact object per line, logs never on stdout.
	out, _, code = run(t, eicar, "scan", "-json", "-log-level", "debug", "-config", cfg, "-")
	var rec struct {
		Path          string `json:"path"`
		Verdict       string `json:"verdict"`
		MalwareFamily string `json:"malware_family"`
		Plugins       []struct {
			Name, Verdict string
			Family        string `json:"malware_family"`
			Error         string `json:"error"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("-json output is not one JSON line: %v\n%s", err, out)
	}
	if rec.Path != "-" || rec.Verdict != "malicious" || rec.MalwareFamily != "EICAR-Test-File" || len(rec.Plugins) != 1 || rec.Plugins[0].Name != "eicar" || code != 1 {
		t.Fatalf("stdin scan: %+v exit %d", rec, code)
	}
}

// -plugin scans with the named plugins only: a second eicar block that
// would answer differently (strict mode misses EICAR after other bytes) is
// left out or asked alone.
func TestScanPluginSubset(t *testing.T) {
	dir := t.TempDir()
	eicarBin := build(t).eicar
	cfg := writeFile(t, dir, "engine.hcl", fmt.Sprintf(`plugin "loose" {
  path = %[1]q
}
plugin "strict" {
  path = %[1]q
  config {
    strict = true
  }
}
plugin "off" {
  path    = %[1]q
  enabled = false
}
`, eicarBin))
	padded := writeFile(t, dir, "padded.bin", "junk before "+eicar)
	for _, tc := range []struct {
		args    []string
		code    int
		plugins []string
	}{
		{nil, 1, []string{"loose", "strict"}},
		{[]string{"-plugin", "loose"}, 1, []string{"loose"}},
		{[]string{"-plugin", "strict"}, 0, []string{"strict"}},
		{[]string{"-plugin", "strict", "-plugin", "loose"}, 1, []string{"loose", "strict"}},
	} {
		args := append(append([]string{"scan", "-json", "-config", cfg}, tc.args...), padded)
		out, errs, code := run(t, "", args...)
		var rec struct{ Plugins []struct{ Name string } }
		if err := json.Unmarshal([]byte(out), &rec); err != nil {
			t.Fatalf("%v: %v\n%s%s", tc.args, err, out, errs)
		}
		var names []string
		for _, p := range rec.Plugins {
			names = append(names, p.Name)
		}
		if code != tc.code || strings.Join(names, ",") != strings.Join(tc.plugins, ",") {
			t.Errorf("%v: exit %d with plugins %v; want exit %d with %v", tc.args, code, names, tc.code, tc.plugins)
		}
	}
	for _, tc := range []struct{ name, says string }{
		{"nosuch", "engine.hcl has no such plugin (it has: loose, strict, off)"},
		{"off", "the plugin is disabled in engine.hcl"},
	} {
		_, errs, code := run(t, "", "scan", "-config", cfg, "-plugin", tc.name, padded)
		if code != 2 || !strings.Contains(errs, tc.says) {
			t.Errorf("-plugin %s: exit %d, stderr %q; want exit 2 saying %q", tc.name, code, errs, tc.says)
		}
	}
}

// TestValidatePointsAtTheLine checks faults found by the host and by the
// plugin itself both come out as FILE:LINE:COL.
func TestValidatePointsAtTheLine(t *testing.T) {
	b := build(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, src, want string
	}{
		{"unknown attribute", "plugin \"eicar\" {\n  path = %q\n  colour = \"red\"\n}\n", ":3:3: error:"},
		{"plugin config type (host's check)", "plugin \"eicar\" {\n  path = %q\n  config {\n    strict = \"very\"\n  }\n}\n", ":4:14: error:"},
		{"plugin config value (plugin's own check)", "plugin \"clamav\" {\n  path = %q\n  config {\n    address = \"ftp://nowhere\"\n  }\n}\n", ":4:15: error:"},
		{"bad duration", "plugin \"eicar\" {\n  path = %q\n  timeout = \"soon\"\n}\n", ":3:13: error:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := b.eicar
			if strings.Contains(tc.src, "clamav") {
				bin = b.clamav
			}
			cfg := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "_")+".hcl", fmt.Sprintf(tc.src, bin))
			_, stderr, code := run(t, "", "validate", "-config", cfg)
			if code != 1 || !strings.HasPrefix(stderr, cfg+tc.want) {
				t.Fatalf("validate: exit %d, stderr:\n%s\nwant exit 1 and a first line starting %q", code, stderr, cfg+tc.want)
			}
		})
	}
	_, _, code := run(t, "", "validate", "-config", eicarConfig(t, dir, ""))
	if code != 0 {
		t.Fatalf("a good config: exit %d", code)
	}
}

func TestRefusesMisbehavingPlugins(t *testing.T) {
	b := build(t)
	for _, tc := range []struct{ name, bin, want string }{
		{"junk on stdout", b.stdout, "Unrecognized remote plugin message"},
		{"wrong protocol version", b.wrongVersion, "incompatible API version with plugin. Plugin version: 2, Client versions: [1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := writeFile(t, dir, "engine.hcl", fmt.Sprintf("plugin \"x\" {\n  path = %q\n}\n", tc.bin))
			clean := writeFile(t, dir, "clean", "x")
			_, stderr, code := run(t, "", "scan", "-config", cfg, clean)
			if code != 2 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, `plugin "x" cannot start`) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 2 and %q", code, stderr, tc.want)
			}
		})
	}
}

// TestPluginsDieWithTheHost kills the host with SIGKILL (no chance to clean
// up) while its plugins run, and checks no plugin process survives it.
func TestPluginsDieWithTheHost(t *testing.T) {
	dir := t.TempDir()
	cfg := eicarConfig(t, dir, "")
	cmd := exec.Command(build(t).host, "scan", "-config", cfg, "-")
	// The plugins' socket directories outlive a killed host: keep them
	// in the test's folder.
	cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	stdin, err := cmd.StdinPipe() // never closed: the host waits on stdin with its plugins running
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var plugins []int
	deadline := time.Now().Add(10 * time.Second)
	for len(plugins) == 0 && time.Now().Before(deadline) {
		plugins = testproc.Children(cmd.Process.Pid)
		time.Sleep(20 * time.Millisecond)
	}
	if len(plugins) == 0 {
		cmd.Process.Kill()
		t.Fatal("the host started no plugin process")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline = time.Now().Add(3 * time.Second)
	for _, pid := range plugins {
		for testproc.Alive(pid) {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("plugin process %d outlived its killed host by 3s", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// `plugins` tells a fault in engine.hcl from a plugin that would not start.
func TestPluginsSaysWhyNothingStarted(t *testing.T) {
	dir := t.TempDir()
	cfg := eicarConfig(t, dir, "  config {\n    strict = \"very\"\n  }\n")
	_, errs, code := run(t, "", "plugins", "-config", cfg)
	if code != 1 || !strings.Contains(errs, "engine.hcl has faults (above), so no plugin was started") || !strings.Contains(errs, "engine.hcl:4") {
		t.Errorf("config fault: exit %d, stderr:\n%s", code, errs)
	}
	cfg = writeFile(t, dir, "engine.hcl", fmt.Sprintf("plugin \"old\" {\n  path = %q\n}\n", build(t).wrongVersion))
	_, errs, code = run(t, "", "plugins", "-config", cfg)
	if code != 1 || !strings.Contains(errs, "the plugins could not be started") {
		t.Errorf("a plugin that cannot start: exit %d, stderr:\n%s", code, errs)
	}
}

// A file scanned before, with the same plugins and versions, is answered
// from the verdict cache, which survives the process (data_dir) and which
// `scan -json` names; cache { enabled = false } turns it off.
func TestScanSaysCached(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "eicar.com", eicar)
	cached := func(cfg string) []bool {
		t.Helper()
		var out []bool
		for range 2 {
			stdout, _, code := run(t, "", "scan", "-json", "-config", cfg, bad)
			var rec struct {
				Verdict string `json:"verdict"`
				Cached  bool   `json:"cached"`
			}
			if err := json.Unmarshal([]byte(stdout), &rec); err != nil || code != 1 || rec.Verdict != "malicious" {
				t.Fatalf("exit %d, %q (%v)", code, stdout, err)
			}
			out = append(out, rec.Cached)
		}
		return out
	}
	if got := cached(eicarConfig(t, dir, "")); !slices.Equal(got, []bool{false, true}) {
		t.Errorf("cached %v over two runs, want [false true]", got)
	}
	off := t.TempDir()
	offCfg := writeFile(t, off, "engine.hcl", fmt.Sprintf("plugin \"eicar\" {\n  path = %q\n}\ncache {\n  enabled = false\n}\n", build(t).eicar))
	if got := cached(offCfg); !slices.Equal(got, []bool{false, false}) {
		t.Errorf("cache off: cached %v over two runs", got)
	}
}

// A FIFO named on the command line is refused as no regular file, at
// once: opening it for reading waited for a writer, for ever. The other
// files are scanned, and the exit code says a file was not.
func TestScanRefusesAFIFO(t *testing.T) {
	dir := t.TempDir()
	cfg := eicarConfig(t, dir, "")
	clean := writeFile(t, dir, "clean.txt", "nothing to see\n")
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, build(t).host, "scan", "-config", cfg, fifo, clean)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("scan of a FIFO did not end: %q so far", out.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v, want 2", err)
	}
	want := fifo + ": UNKNOWN (" + fifo + " is not a regular file)\n" + clean + ": OK\n"
	if out.String() != want {
		t.Fatalf("output\n%s\nwant\n%s", out.String(), want)
	}
}

// Stdin named twice is read once: the second "-" is unknown, not a
// benign answer for the nothing left to read.
func TestScanReadsStdinOnce(t *testing.T) {
	dir := t.TempDir()
	cfg := eicarConfig(t, dir, "")
	out, _, code := run(t, eicar, "scan", "-config", cfg, "-", "-")
	want := "-: EICAR-Test-File FOUND\n-: UNKNOWN (stdin is named more than once; it is read once, for the first)\n"
	if out != want || code != 1 {
		t.Fatalf("scan - -: exit %d, output\n%s\nwant exit 1 and\n%s", code, out, want)
	}
}

// A folder named through a symlink is scanned, its files named under the
// link: it printed nothing and exited 0, as a clean folder would.
func TestScanFollowsASymlinkedFolder(t *testing.T) {
	dir := t.TempDir()
	cfg := eicarConfig(t, dir, "")
	folder := filepath.Join(dir, "folder")
	if err := os.Mkdir(folder, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, folder, "eicar.com", eicar)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(folder, link); err != nil {
		t.Fatal(err)
	}
	out, _, code := run(t, "", "scan", "-config", cfg, link)
	want := filepath.Join(link, "eicar.com") + ": EICAR-Test-File FOUND\n"
	if out != want || code != 1 {
		t.Fatalf("scan of a symlinked folder: exit %d, output\n%s\nwant exit 1 and\n%s", code, out, want)
	}
}

// Many files, scanned many at a time, are printed in the order given
// (a folder's in name order), each once, whatever order their scans end
// in; the exit code folds every verdict.
func TestScanPrintsManyFilesInOrder(t *testing.T) {
	dir := t.TempDir()
	cfg := eicarConfig(t, dir, "")
	files := filepath.Join(dir, "files")
	if err := os.Mkdir(files, 0o755); err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := range 300 {
		name := fmt.Sprintf("f%03d", i)
		if i%37 == 5 {
			want.WriteString(writeFile(t, files, name, eicar) + ": EICAR-Test-File FOUND\n")
		} else {
			want.WriteString(writeFile(t, files, name, fmt.Sprintf("clean %d\n", i)) + ": OK\n")
		}
	}
	missing := filepath.Join(dir, "missing")
	for _, c := range []string{"1", "7", "64", "500"} {
		out, _, code := run(t, "", "scan", "-config", cfg, "-concurrency", c, files, missing)
		body, last, _ := strings.Cut(out, missing+": UNKNOWN (")
		if body != want.String() || last == "" || code != 1 {
			t.Fatalf("-concurrency %s: exit %d, output\n%s\nwant exit 1, then\n%s%s: UNKNOWN (...)", c, code, out, want.String(), missing)
		}
	}
	out, _, code := run(t, "", "scan", "-json", "-config", cfg, files)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 300 || code != 1 {
		t.Fatalf("-json: exit %d, %d lines; want exit 1 and 300", code, len(lines))
	}
	for i, l := range lines {
		var rec struct{ Path string }
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Path != filepath.Join(files, fmt.Sprintf("f%03d", i)) {
			t.Fatalf("-json line %d: %q (%v)", i, l, err)
		}
	}
}
