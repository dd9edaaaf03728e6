package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/launch"
)

// positions renders diagnostics as "LINE:COL: summary" ("-: summary" when
// there is no range), the form the broken-config table is written in.
func positions(diags hcl.Diagnostics) []string {
	out := make([]string, 0, len(diags))
	for _, d := range diags {
		if d.Subject == nil {
			out = append(out, "-: "+d.Summary)
			continue
		}
		out = append(out, fmt.Sprintf("%d:%d: %s", d.Subject.Start.Line, d.Subject.Start.Column, d.Summary))
	}
	return out
}

func wantDiags(t *testing.T, diags hcl.Diagnostics, want []string) {
	t.Helper()
	got := positions(diags)
	if !slices.Equal(got, want) {
		t.Errorf("diagnostics:\n  got  %s\n  want %s", strings.Join(got, "\n       "), strings.Join(want, "\n       "))
	}
}

func abs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestBrokenConfigs checks the position and summary of every fault in the
// files under testdata/broken. Each file gathers one area's faults; the
// exact list (in file order) also proves no fault is reported twice.
func TestBrokenConfigs(t *testing.T) {
	t.Setenv("MICROENGINE_TEST_UNSET_VARIABLE", "")
	tests := []struct {
		file string
		want []string
	}{
		{"syntax.hcl", []string{
			"2:20: Invalid multi-line string",
			"2:20: Unterminated template string",
			"3:2: Invalid multi-line string",
		}},
		{"structure.hcl", []string{
			`1:1: unsupported block "engin"`,
			"6:3: engine.concurency: unsupported argument",
			"9:1: duplicate engine block",
			`14:3: plugin "fake": color: unsupported argument`,
			`15:3: plugin "fake": unsupported block "settings"`,
			`19:1: plugin "fake": duplicate plugin name`,
			"23:8: Missing name for plugin",
		}},
		{"engine.hcl", []string{
			`2:21: engine.log_level: invalid value "verbose"`,
			`3:21: engine.concurrency: want a number, not the string "four"`,
			`4:21: engine.swap: invalid value "sometimes"`,
			"5:21: engine.health_interval: a duration needs a unit",
			`6:21: engine.drain_timeout: duration must be greater than 0, not "-5s"`,
			"7:21: engine.data_dir: must not be empty",
		}},
		{"engine2.hcl", []string{
			"2:21: engine.concurrency: want a whole number, not 2.5",
			`3:21: engine.health_interval: duration must be greater than 0, not "0s"`,
			`4:21: engine.drain_timeout: invalid duration "ten seconds"`,
			`5:21: engine.admin: "0.0.0.0:9090" is not a loopback address`,
			`6:21: engine.swap: invalid value "true"`,
		}},
		{"plugins.hcl", []string{
			`2:10: plugin "missing": path: plugin binary not found`,
			`6:10: plugin "noexec": path: the plugin binary is not executable`,
			`10:10: plugin "dir": path: the plugin binary is not a regular file`,
			`15:12: plugin "badpin": sha256: want 64 hexadecimal digits`,
			`20:12: plugin "mismatch": sha256: the binary does not match the pin`,
			`25:13: plugin "types": timeout: invalid duration "30"`,
			`26:13: plugin "types": enabled: want true or false, not the string "yes"`,
			`29:1: plugin "nopath": missing path`,
			`30:13: plugin "nopath": timeout: a duration needs a unit`,
			`33:8: plugin "bad name!": invalid plugin name`,
			`36:3: plugin "bad name!": duplicate config block`,
		}},
		{"marketplace.hcl", []string{
			`2:23: marketplace.listen: invalid address "localhost"`,
			"3:23: marketplace.webhook_secret: the secret is empty",
			"4:23: marketplace.tls_cert: tls_cert needs tls_key",
			`5:23: marketplace.max_body_size: invalid size "1 parsec"`,
			"6:23: marketplace.workers: 0 is out of range",
			"7:23: marketplace.queue_size: -1 is out of range",
			"8:23: marketplace.safety_margin: a duration needs a unit",
			"9:23: marketplace.max_artifact_size: invalid size 1.5",
			`10:23: marketplace.fetch_timeout: duration must be greater than 0, not "0s"`,
			`11:23: marketplace.max_redirects: want a number, not the string "many"`,
			`12:23: marketplace.retention: invalid duration "forever"`,
			"13:23: marketplace.record_grace: at least 1s",
			`16:16: marketplace.bid.strategy: invalid value "yolo"`,
			`21:13: marketplace.filter "reject": op: invalid op "like"`,
			`24:10: marketplace.filter: invalid action "drop"`,
			`32:13: marketplace.filter "accept": value: op "<" needs a number, not "big"`,
			`37:13: marketplace.filter "favor": value: invalid regular expression`,
			`39:3: marketplace.filter "penalize": missing field`,
			`39:3: marketplace.filter "penalize": missing value`,
		}},
		{"marketplace2.hcl", []string{
			"1:1: marketplace: missing listen",
			"1:1: marketplace: missing webhook_secret",
			"2:13: marketplace.tls_key: tls_key needs tls_cert",
			`6:5: marketplace.bid.min_multiplier: only applies to strategy "custom"`,
			"8:3: duplicate bid block",
			"12:1: duplicate marketplace block",
		}},
		{"marketplace3.hcl", []string{
			`2:20: marketplace.listen: invalid address "127.0.0.1:99999"`,
			"3:20: marketplace.webhook_secret: secret #2 is empty",
			"7:22: marketplace.bid.min_multiplier: must be greater than 0, not 0",
			`8:22: marketplace.bid.max_multiplier: want a number, not the string "lots"`,
		}},
		{"marketplace4.hcl", []string{
			"3:20: marketplace.webhook_secret: the list is empty",
			"4:20: marketplace.tls_cert: cannot read the file",
			"5:20: marketplace.tls_key: cannot read the file",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			name := filepath.Join("testdata", "broken", tt.file)
			cfg, diags := Load(name)
			if cfg == nil || cfg.Files[name] == nil {
				t.Fatalf("Load returned no parsed file for %s; WriteDiagnostics needs it", name)
			}
			for _, d := range diags {
				if d.Severity != hcl.DiagError {
					t.Errorf("%s: severity %v, want error", d.Summary, d.Severity)
				}
				if d.Subject != nil && d.Subject.Filename != name {
					t.Errorf("%s: filename %q, want %q as given", d.Summary, d.Subject.Filename, name)
				}
			}
			wantDiags(t, diags, tt.want)
		})
	}
}

// TestDuplicateMentionsFirst: the repeat is reported, and the detail says
// where the first one is, so both can be found.
func TestDuplicateMentionsFirst(t *testing.T) {
	name := filepath.Join("testdata", "broken", "structure.hcl")
	_, diags := Load(name)
	for _, d := range diags {
		if strings.Contains(d.Summary, "duplicate plugin name") {
			if want := name + ":12"; !strings.Contains(d.Detail, want) {
				t.Errorf("detail %q does not mention the first block at %s", d.Detail, want)
			}
			return
		}
	}
	t.Fatal("no duplicate plugin diagnostic")
}

// TestMissingBinarySaysHowToBuild: the hint names a make target that
// exists (make build builds every plugin).
func TestMissingBinarySaysHowToBuild(t *testing.T) {
	name := filepath.Join("testdata", "broken", "plugins.hcl")
	_, diags := Load(name)
	for _, d := range diags {
		if strings.Contains(d.Summary, "plugin binary not found") {
			if !strings.Contains(d.Detail, "make build") {
				t.Errorf("detail %q; want it to say make build", d.Detail)
			}
			return
		}
	}
	t.Fatal("no missing binary diagnostic")
}

func TestGoodConfig(t *testing.T) {
	t.Setenv("MICROENGINE_TEST_SECRET", "from-env")
	name := filepath.Join("testdata", "good.hcl")
	cfg, diags := Load(name)
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", positions(diags))
	}
	if cfg.Filename != name {
		t.Errorf("Filename = %q, want %q as given", cfg.Filename, name)
	}
	wantEngine := Engine{
		DataDir:         abs(t, "testdata/state"),
		LogLevel:        "debug",
		Concurrency:     8,
		Swap:            "reload",
		HealthInterval:  5 * time.Second,
		DrainTimeout:    2 * time.Minute,
		Admin:           "127.0.0.1:9090",
		AdminNetwork:    "tcp",
		MaliciousQuorum: 1,
	}
	if cfg.Engine != wantEngine {
		t.Errorf("Engine = %+v\nwant     %+v", cfg.Engine, wantEngine)
	}

	if len(cfg.Plugins) != 2 {
		t.Fatalf("got %d plugins, want 2", len(cfg.Plugins))
	}
	fake, ok := cfg.Plugin("fake")
	if !ok {
		t.Fatal(`no plugin "fake"`)
	}
	if want := abs(t, "testdata/plugins/microengine-plugin-fake"); fake.Path != want {
		t.Errorf("Path = %q, want %q", fake.Path, want)
	}
	if want := "c2f9cd022ba2e6bbee2be1f05061046f19745f439e1728867e414440c26a0b80"; fake.SHA256 != want {
		t.Errorf("SHA256 = %q, want the lowercased pin %q", fake.SHA256, want)
	}
	if fake.Timeout != 30*time.Second || !fake.Enabled {
		t.Errorf("Timeout, Enabled = %v, %v; want 30s, true", fake.Timeout, fake.Enabled)
	}
	if fake.Body == nil {
		t.Error("Body is nil; want the undecoded config block")
	}
	if fake.DefRange.Start.Line != 14 || fake.ConfigRange.Start.Line != 23 {
		t.Errorf("DefRange line %d, ConfigRange line %d; want 14 and 23", fake.DefRange.Start.Line, fake.ConfigRange.Start.Line)
	}
	if fake.MaxVerdict != shared.VerdictSuspicious || fake.Weight == nil || *fake.Weight != 0.5 {
		t.Errorf("MaxVerdict, Weight = %q, %v; want suspicious, 0.5", fake.MaxVerdict, fake.Weight)
	}
	off, _ := cfg.Plugin("off")
	if off.Enabled || off.Body != nil || off.ConfigRange != off.DefRange {
		t.Errorf("plugin off = %+v; want disabled, no body, ConfigRange = DefRange", off)
	}
	if want := abs(t, "testdata/plugins/not-built-yet"); off.Path != want {
		t.Errorf("disabled plugin Path = %q, want %q (resolved though not checked)", off.Path, want)
	}

	m := cfg.Marketplace
	if m == nil {
		t.Fatal("Marketplace is nil")
	}
	if m.Listen != "127.0.0.1:8080" || !slices.Equal(m.WebhookSecrets, []string{"from-env", "old-secret"}) {
		t.Errorf("Listen %q, secrets %q", m.Listen, m.WebhookSecrets)
	}
	if m.MaxBodySize != 2<<20 || m.Workers != 2 || m.QueueSize != 16 || m.SafetyMargin != 3*time.Second ||
		m.MaxArtifactSize != 100<<20 || m.FetchTimeout != 15*time.Second || m.MaxRedirects != 0 || m.Retention != 24*time.Hour ||
		m.RecordGrace != 30*time.Minute {
		t.Errorf("Marketplace = %+v", *m)
	}
	if m.MetricsListen != "127.0.0.1:0" || !m.MetricsListenSet || m.MaxConnections != 100 || m.MaxWebhooksInFlight != 8 {
		t.Errorf("metrics_listen %q (set %v), max_connections %d, max_webhooks_in_flight %d", m.MetricsListen, m.MetricsListenSet, m.MaxConnections, m.MaxWebhooksInFlight)
	}
	if want := (Bid{Strategy: "custom", MinMultiplier: 2, MaxMultiplier: 0.5}); m.Bid != want {
		t.Errorf("Bid = %+v, want %+v", m.Bid, want)
	}
	var filters []string
	for _, f := range m.Filters {
		filters = append(filters, fmt.Sprintf("%d %s %s %s %s", f.Range.Start.Line, f.Action, f.Field, f.Op, f.Value))
	}
	wantFilters := []string{
		"60 reject mimetype startswith image/",
		"65 favor mimetype == application/x-dosexec",
		"70 accept size < 1048576",
	}
	if !slices.Equal(filters, wantFilters) {
		t.Errorf("Filters = %q, want %q", filters, wantFilters)
	}
}

func TestDefaults(t *testing.T) {
	name := filepath.Join("testdata", "minimal.hcl")
	cfg, diags := Load(name)
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", positions(diags))
	}
	dataDir := abs(t, "testdata/data")
	want := Engine{
		DataDir:        dataDir,
		LogLevel:       "info",
		Concurrency:    DefaultConcurrency,
		Swap:           "watch",
		HealthInterval: 10 * time.Second,
		DrainTimeout:   60 * time.Second,
		Admin:          filepath.Join(dataDir, "admin.sock"),
		AdminNetwork:   "unix",
		// Composition: one malicious answer is enough.
		MaliciousQuorum: 1,
	}
	if cfg.Engine != want {
		t.Errorf("Engine = %+v\nwant     %+v", cfg.Engine, want)
	}
	p := cfg.Plugins[0]
	if p.Timeout != 60*time.Second || !p.Enabled || p.SHA256 != "" || p.Body != nil {
		t.Errorf("plugin = %+v; want timeout 60s, enabled, no pin, no body", p)
	}
	if cfg.Marketplace != nil {
		t.Errorf("Marketplace = %+v, want nil without a block", cfg.Marketplace)
	}

	// An empty engine block and a marketplace with only what it needs.
	src := "engine {}\nmarketplace {\n  listen = \":0\"\n  webhook_secret = \"s\"\n}\n"
	cfg, diags = Parse([]byte(src), filepath.Join("testdata", "x.hcl"))
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", positions(diags))
	}
	if cfg.Engine != want {
		t.Errorf("empty engine block: Engine = %+v\nwant     %+v", cfg.Engine, want)
	}
	wantM := Marketplace{
		Listen:              ":0",
		WebhookSecrets:      []string{"s"},
		MetricsListen:       "127.0.0.1:9464",
		MaxBodySize:         64 << 10,
		MaxConnections:      1024,
		MaxWebhooksInFlight: 64,
		Workers:             4,
		QueueSize:           1024,
		SafetyMargin:        2 * time.Second,
		MaxArtifactSize:     64 << 20,
		FetchTimeout:        20 * time.Second,
		MaxRedirects:        5,
		Retention:           7 * 24 * time.Hour,
		RecordGrace:         time.Hour,
		Bid:                 Bid{Strategy: "default", MinMultiplier: 1, MaxMultiplier: 1},
		DefRange:            cfg.Marketplace.DefRange,
	}
	if got := *cfg.Marketplace; fmt.Sprint(got) != fmt.Sprint(wantM) {
		t.Errorf("Marketplace = %+v\nwant          %+v", got, wantM)
	}
}

// TestNullMeansDefault: `x = null` is "not set", as in Terraform.
func TestNullMeansDefault(t *testing.T) {
	cfg, diags := Parse([]byte("engine {\n  concurrency = null\n  swap = null\n}\n"), "e.hcl")
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", positions(diags))
	}
	if cfg.Engine.Concurrency != DefaultConcurrency || cfg.Engine.Swap != "watch" {
		t.Errorf("Engine = %+v; want defaults", cfg.Engine)
	}
}

func TestFunctions(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "engine.hcl")
	parse := func(secret string) (*Config, hcl.Diagnostics) {
		src := "marketplace {\n  listen = \":0\"\n  webhook_secret = " + secret + "\n}\n"
		return Parse([]byte(src), name)
	}

	t.Setenv("MICROENGINE_TEST_SECRET", "from-env")
	cfg, diags := parse(`env("MICROENGINE_TEST_SECRET")`)
	if len(diags) > 0 {
		t.Fatalf("env: %v", positions(diags))
	}
	if got := cfg.Marketplace.WebhookSecrets; !slices.Equal(got, []string{"from-env"}) {
		t.Errorf("env: secrets %q", got)
	}

	// Unset is "" and the empty secret is reported where it is used.
	t.Setenv("MICROENGINE_TEST_SECRET", "")
	_, diags = parse(`env("MICROENGINE_TEST_SECRET")`)
	wantDiags(t, diags, []string{"3:20: marketplace.webhook_secret: the secret is empty"})

	// file() is relative to the config file; trimspace drops the newline.
	cfg, diags = parse(`[trimspace(file("secret.txt")), file("secret.txt")]`)
	if len(diags) > 0 {
		t.Fatalf("file: %v", positions(diags))
	}
	if got := cfg.Marketplace.WebhookSecrets; !slices.Equal(got, []string{"from-file", "from-file\n"}) {
		t.Errorf("file: secrets %q", got)
	}

	// abspath() resolves against the config file's folder, not the cwd.
	cfg, diags = parse(`abspath("run/clamd.sock")`)
	if len(diags) > 0 {
		t.Fatalf("abspath: %v", positions(diags))
	}
	if got, want := cfg.Marketplace.WebhookSecrets, filepath.Join(dir, "run", "clamd.sock"); !slices.Equal(got, []string{want}) {
		t.Errorf("abspath: %q, want %q", got, want)
	}

	_, diags = parse(`file("nope.txt")`)
	wantDiags(t, diags, []string{"3:20: Error in function call"})
	_, diags = parse(`shell("id")`)
	wantDiags(t, diags, []string{"3:20: Call to unknown function"})
	_, diags = parse(`var.secret`)
	wantDiags(t, diags, []string{"3:20: Variables not allowed"})

	for _, fn := range []string{"env", "file", "trimspace"} {
		if _, ok := cfg.EvalContext().Functions[fn]; !ok {
			t.Errorf("EvalContext lacks %s()", fn)
		}
	}
}

// writeBinary makes an executable stand-in for a plugin binary.
func writeBinary(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestRelativePaths(t *testing.T) {
	root := t.TempDir()
	confDir := filepath.Join(root, "etc")
	writeBinary(t, filepath.Join(confDir, "bin", "a"), "a")
	writeBinary(t, filepath.Join(root, "opt", "b"), "b")
	writeBinary(t, filepath.Join(root, "c"), "c")
	src := fmt.Sprintf(`engine {
  data_dir = "../var/lib/me"
  admin    = "run/admin.sock"
}
plugin "a" {
  path = "./bin/a"
}
plugin "b" {
  path = "../opt/b"
}
plugin "c" {
  path = %q
}
`, filepath.Join(root, "c"))
	cfg, diags := Parse([]byte(src), filepath.Join(confDir, "engine.hcl"))
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", positions(diags))
	}
	want := map[string]string{
		"a": filepath.Join(confDir, "bin", "a"),
		"b": filepath.Join(root, "opt", "b"),
		"c": filepath.Join(root, "c"),
	}
	for _, p := range cfg.Plugins {
		if p.Path != want[p.Name] {
			t.Errorf("plugin %s: Path = %q, want %q", p.Name, p.Path, want[p.Name])
		}
	}
	if want := filepath.Join(root, "var", "lib", "me"); cfg.Engine.DataDir != want {
		t.Errorf("DataDir = %q, want %q", cfg.Engine.DataDir, want)
	}
	if want := filepath.Join(confDir, "run", "admin.sock"); cfg.Engine.Admin != want || cfg.Engine.AdminNetwork != "unix" {
		t.Errorf("Admin = %q %q, want unix %q", cfg.Engine.AdminNetwork, cfg.Engine.Admin, want)
	}
}

func TestAdmin(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "engine.hcl")
	tests := []struct{ admin, network, addr string }{
		{"localhost:9090", "tcp", "localhost:9090"},
		{"[::1]:9090", "tcp", "[::1]:9090"},
		{"admin.sock", "unix", filepath.Join(dir, "admin.sock")},
		{"/run/me/admin.sock", "unix", "/run/me/admin.sock"},
		{"unix:///run/me/admin.sock", "unix", "/run/me/admin.sock"},
		{"unix://admin.sock", "unix", filepath.Join(dir, "admin.sock")},
	}
	for _, tt := range tests {
		cfg, diags := Parse([]byte(fmt.Sprintf("engine {\n  admin = %q\n}\n", tt.admin)), name)
		if len(diags) > 0 {
			t.Errorf("%s: %v", tt.admin, positions(diags))
			continue
		}
		if cfg.Engine.AdminNetwork != tt.network || cfg.Engine.Admin != tt.addr {
			t.Errorf("%s: got %s %s, want %s %s", tt.admin, cfg.Engine.AdminNetwork, cfg.Engine.Admin, tt.network, tt.addr)
		}
	}

	// A socket path bind(2) would refuse is reported where it comes from.
	long := strings.Repeat("d", 120)
	_, diags := Parse([]byte(fmt.Sprintf("engine {\n  data_dir = %q\n}\n", long)), name)
	wantDiags(t, diags, []string{"2:14: engine.admin: the admin socket path is too long"})
	_, diags = Parse([]byte(fmt.Sprintf("engine {\n  data_dir = %q\n  admin = \"127.0.0.1:9\"\n}\n", long)), name)
	wantDiags(t, diags, nil)
}

func TestSHA256Pin(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "microengine-plugin-x")
	writeBinary(t, bin, "#!/bin/sh\nexit 0\n")
	sum, err := launch.FileSHA256(bin)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "engine.hcl")
	src := fmt.Sprintf("plugin \"x\" {\n  path   = \"microengine-plugin-x\"\n  sha256 = %q\n}\n", strings.ToUpper(sum))

	cfg, diags := Parse([]byte(src), name)
	if len(diags) > 0 {
		t.Fatalf("matching pin: %v", positions(diags))
	}
	if cfg.Plugins[0].SHA256 != sum {
		t.Errorf("SHA256 = %q, want %q", cfg.Plugins[0].SHA256, sum)
	}

	// The binary is rebuilt: the pin no longer holds.
	writeBinary(t, bin, "#!/bin/sh\nexit 1\n")
	_, diags = Parse([]byte(src), name)
	wantDiags(t, diags, []string{`3:12: plugin "x": sha256: the binary does not match the pin`})
	if !strings.Contains(diags[0].Detail, sum) {
		t.Errorf("detail %q does not show the pin", diags[0].Detail)
	}

	// A disabled plugin's binary is not checked at all.
	_, diags = Parse([]byte(strings.Replace(src, "}", "  enabled = false\n}", 1)), name)
	wantDiags(t, diags, nil)
}

func TestLoadMissingFile(t *testing.T) {
	name := filepath.Join(t.TempDir(), "nope.hcl")
	cfg, diags := Load(name)
	if cfg == nil || cfg.Files == nil {
		t.Fatal("Load must return a Config with Files even when the file cannot be read")
	}
	wantDiags(t, diags, []string{"-: cannot read the configuration file"})
	if !strings.Contains(diags[0].Detail, name) {
		t.Errorf("detail %q does not name the file", diags[0].Detail)
	}
}
