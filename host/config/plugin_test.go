package config

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/microengine/microengine/shared"
)

// testSchema has one field of every type, the way a plugin declares them.
var testSchema = []shared.ConfigField{
	{Name: "address", Type: shared.FieldString, Required: true, Description: "Where clamd listens."},
	{Name: "retries", Type: shared.FieldNumber, Default: "2"},
	{Name: "alert_limit", Type: shared.FieldBool},
	{Name: "ping_every", Type: shared.FieldDuration, Default: "10s"},
	{Name: "max_stream", Type: shared.FieldSize, Default: "25M"},
}

// pluginFrom parses one plugin block whose config block holds body, with a
// real executable beside the file, and returns the decoded Plugin.
func pluginFrom(t *testing.T, body string) Plugin {
	t.Helper()
	dir := t.TempDir()
	writeBinary(t, filepath.Join(dir, "p"), "p")
	src := "plugin \"clamav\" {\n  path = \"p\"\n"
	if body != "" {
		src += "  config {\n" + body + "  }\n"
	}
	src += "}\n"
	cfg, diags := Parse([]byte(src), filepath.Join(dir, "engine.hcl"))
	if diags.HasErrors() {
		t.Fatalf("parse: %v", positions(diags))
	}
	return cfg.Plugins[0]
}

func TestDecodePluginBody(t *testing.T) {
	t.Setenv("MICROENGINE_TEST_ADDR", "tcp://127.0.0.1:3310")
	tests := []struct {
		name string
		body string // the config block's lines: the plugin block is line 1, config line 3, its first attribute line 4
		want string
	}{
		{"every type", `    address     = "unix:///run/clamav/clamd.ctl"
    retries     = 3
    alert_limit = true
    ping_every  = "90s"
    max_stream  = "25M"
`, `{"address":"unix:///run/clamav/clamd.ctl","alert_limit":true,"max_stream":26214400,"ping_every":"1m30s","retries":3}`},
		{"sizes in bytes and units; numbers exact", `    address    = "a"
    max_stream = 4096
    retries    = 0.25
`, `{"address":"a","max_stream":4096,"retries":0.25}`},
		{"size units", `    address    = "a"
    max_stream = "1GiB"
`, `{"address":"a","max_stream":1073741824}`},
		{"decimal size", `    address    = "a"
    max_stream = "100MB"
`, `{"address":"a","max_stream":100000000}`},
		{"defaults are not filled in", `    address = "a"
`, `{"address":"a"}`},
		{"null is unset", `    address = "a"
    retries = null
`, `{"address":"a"}`},
		{"env and conversions", `    address     = env("MICROENGINE_TEST_ADDR")
    alert_limit = "true"
    retries     = "12"
    ping_every  = "0s"
`, `{"address":"tcp://127.0.0.1:3310","alert_limit":true,"ping_every":"0s","retries":12}`},
		{"large numbers stay numbers", `    address = "a"
    retries = 12345678901234567890
`, `{"address":"a","retries":12345678901234567890}`},
		{"whole numbers without exponent, for int fields", `    address = "a"
    retries = 1e6
`, `{"address":"a","retries":1000000}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pluginFrom(t, tt.body)
			js, diags := DecodePluginBody(p, testSchema, nil)
			if len(diags) > 0 {
				t.Fatalf("diagnostics: %v", positions(diags))
			}
			if string(js) != tt.want {
				t.Errorf("JSON\n got  %s\n want %s", js, tt.want)
			}
		})
	}
}

func TestDecodePluginBodyFaults(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"unknown attribute, with a suggestion", `    address = "a"
    adress  = "b"
`, []string{`5:5: plugin "clamav": config.adress: unsupported argument`}},
		{"nested block", `    address = "a"
    tls {
    }
`, []string{`5:5: plugin "clamav": config: unsupported block "tls"`}},
		{"required missing points at the config block", `    retries = 1
`, []string{`3:3: plugin "clamav": config: missing required argument "address"`}},
		{"bad duration", `    address    = "a"
    ping_every = "10 seconds"
`, []string{`5:18: plugin "clamav": config.ping_every: invalid duration "10 seconds"`}},
		{"duration without unit", `    address    = "a"
    ping_every = 10
`, []string{`5:18: plugin "clamav": config.ping_every: a duration needs a unit`}},
		{"negative duration", `    address    = "a"
    ping_every = "-1s"
`, []string{`5:18: plugin "clamav": config.ping_every: duration must be greater than 0, not "-1s"`}},
		{"bad size", `    address    = "a"
    max_stream = "25 furlongs"
`, []string{`5:18: plugin "clamav": config.max_stream: invalid size "25 furlongs"`}},
		{"fractional size", `    address    = "a"
    max_stream = 0.5
`, []string{`5:18: plugin "clamav": config.max_stream: invalid size 0.5`}},
		{"size of a list", `    address    = "a"
    max_stream = [1]
`, []string{`5:18: plugin "clamav": config.max_stream: want a size, not a list`}},
		{"wrong types", `    address     = ["a"]
    retries     = "three"
    alert_limit = "sometimes"
`, []string{
			`4:19: plugin "clamav": config.address: want a string, not a list`,
			`5:19: plugin "clamav": config.retries: want a number, not the string "three"`,
			`6:19: plugin "clamav": config.alert_limit: want true or false, not the string "sometimes"`,
		}},
		// HCL would turn these into strings; the schema says string.
		{"a number or a bool for a string", `    address = 5
    ping_every = "1s"
`, []string{
			`4:15: plugin "clamav": config.address: want a string, not the number 5`,
		}},
		{"a bool for a string", `    address = true
`, []string{
			`4:15: plugin "clamav": config.address: want a string, not the bool true`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pluginFrom(t, tt.body)
			js, diags := DecodePluginBody(p, testSchema, nil)
			if js != nil {
				t.Errorf("JSON %s returned with errors", js)
			}
			wantDiags(t, diags, tt.want)
		})
	}
}

// A list field takes strings (or one string): HCL would turn a number or a
// bool into a path or an address without a word, as it would for a string
// field, so it is a diagnostic too.
func TestDecodePluginBodyListTypes(t *testing.T) {
	schema := []shared.ConfigField{
		{Name: "rules", Type: shared.FieldPathList},
		{Name: "hosts", Type: shared.FieldList},
	}
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"a number for a path list", `    rules = 5
`, []string{`4:13: plugin "clamav": config.rules: want a string or a list of strings, not the number 5`}},
		{"a bool in a list", `    hosts = ["a", true]
`, []string{`4:13: plugin "clamav": config.hosts[1]: want a string, not the bool true`}},
		{"a number in a path list", `    rules = ["./r", 7]
`, []string{`4:13: plugin "clamav": config.rules[1]: want a string, not the number 7`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pluginFrom(t, tt.body)
			js, diags := DecodePluginBody(p, schema, nil)
			if js != nil {
				t.Errorf("JSON %s returned with errors", js)
			}
			wantDiags(t, diags, tt.want)
		})
	}
	p := pluginFrom(t, "    rules = \"./r\"\n    hosts = [\"a\", \"b\"]\n")
	if _, diags := DecodePluginBody(p, schema, nil); len(diags) > 0 {
		t.Errorf("strings refused: %v", positions(diags))
	}
}

func TestDecodePluginBodyNoBlock(t *testing.T) {
	p := pluginFrom(t, "")
	// Nothing required: an empty object, the plugin applies its defaults.
	js, diags := DecodePluginBody(p, testSchema[1:], nil)
	if len(diags) > 0 || string(js) != "{}" {
		t.Errorf("got %s %v; want {}", js, positions(diags))
	}
	// Something required: the fault points at the plugin block.
	_, diags = DecodePluginBody(p, testSchema, nil)
	wantDiags(t, diags, []string{`1:1: plugin "clamav": config: missing required argument "address"`})
	// A plugin that declares nothing accepts an empty block.
	js, diags = DecodePluginBody(p, nil, nil)
	if len(diags) > 0 || string(js) != "{}" {
		t.Errorf("no schema: got %s %v; want {}", js, positions(diags))
	}
}

// TestDecodePluginBodyPluginBugs: a broken schema is the plugin's fault and
// says so, at the plugin block.
func TestDecodePluginBodyPluginBugs(t *testing.T) {
	p := pluginFrom(t, "    address = \"a\"\n")
	_, diags := DecodePluginBody(p, []shared.ConfigField{{Name: "address", Type: "url"}}, nil)
	wantDiags(t, diags, []string{`1:1: plugin "clamav" declares the config field "address" with unknown type "url"`})
	_, diags = DecodePluginBody(p, []shared.ConfigField{{Name: "address", Type: shared.FieldString}, {Name: "address", Type: shared.FieldString}}, nil)
	wantDiags(t, diags, []string{`1:1: plugin "clamav" declares the config field "address" twice or with no name`})
}

// TestDecodePluginBodyEvalContext: the config's own context is used, so a
// file() in a plugin body is relative to engine.hcl.
func TestDecodePluginBodyEvalContext(t *testing.T) {
	dir := t.TempDir()
	writeBinary(t, filepath.Join(dir, "p"), "p")
	writeBinary(t, filepath.Join(dir, "addr.txt"), "unix:///x.sock\n")
	src := "plugin \"clamav\" {\n  path = \"p\"\n  config {\n    address = trimspace(file(\"addr.txt\"))\n  }\n}\n"
	cfg, diags := Parse([]byte(src), filepath.Join(dir, "engine.hcl"))
	if diags.HasErrors() {
		t.Fatal(positions(diags))
	}
	js, diags := DecodePluginBody(cfg.Plugins[0], testSchema, cfg.EvalContext())
	if len(diags) > 0 || string(js) != `{"address":"unix:///x.sock"}` {
		t.Errorf("got %s %v", js, positions(diags))
	}
}

func TestPluginFieldDiagnostics(t *testing.T) {
	p := pluginFrom(t, `    address    = "unix:///nowhere"
    max_stream = "25M"
`)
	ce := (&shared.ConfigError{}).
		Add("address", "clamd does not answer at %s", "unix:///nowhere").
		Add("max_stream.limit", "above clamd's StreamMaxLength").
		Add("ping_every", "must be at least 1s").
		Add("", "the backend refused the configuration")
	diags := PluginFieldDiagnostics(p, ce)
	wantDiags(t, diags, []string{
		// Not written in the file, or about no field: the config block.
		`3:3: plugin "clamav": config.ping_every: must be at least 1s`,
		`3:3: plugin "clamav": config: the backend refused the configuration`,
		`4:18: plugin "clamav": config.address: clamd does not answer at unix:///nowhere`,
		`5:18: plugin "clamav": config.max_stream.limit: above clamd's StreamMaxLength`,
	})
	for _, d := range diags {
		if d.Severity != hcl.DiagError || d.Subject.Filename != p.DefRange.Filename {
			t.Errorf("%s: severity %v, file %q", d.Summary, d.Severity, d.Subject.Filename)
		}
	}

	if diags := PluginFieldDiagnostics(p, nil); diags != nil {
		t.Errorf("nil ConfigError: %v", positions(diags))
	}

	// No config block: everything points at the plugin block.
	bare := pluginFrom(t, "")
	diags = PluginFieldDiagnostics(bare, (&shared.ConfigError{}).Add("address", "required"))
	wantDiags(t, diags, []string{`1:1: plugin "clamav": config.address: required`})
}

// ExampleDecodePluginBody shows the JSON a plugin receives.
func ExampleDecodePluginBody() {
	src := `plugin "clamav" {
  path    = "/bin/sh"
  config {
    address    = "unix:///run/clamav/clamd.ctl"
    max_stream = "25M"
    timeout    = "90s"
  }
}
`
	cfg, _ := Parse([]byte(src), "engine.hcl")
	js, _ := DecodePluginBody(cfg.Plugins[0], []shared.ConfigField{
		{Name: "address", Type: shared.FieldString, Required: true},
		{Name: "max_stream", Type: shared.FieldSize},
		{Name: "timeout", Type: shared.FieldDuration},
	}, cfg.EvalContext())
	fmt.Println(string(js))
	// Output: {"address":"unix:///run/clamav/clamd.ctl","max_stream":26214400,"timeout":"1m30s"}
}

// TestDecodePluginBodyCollections: lists, paths and maps, as the yara
// plugin declares them; paths become absolute against engine.hcl's folder
// (globs kept), and faults point at file:line:col.
func TestDecodePluginBodyCollections(t *testing.T) {
	schema := []shared.ConfigField{
		{Name: "rules", Type: shared.FieldPathList, Required: true},
		{Name: "spool", Type: shared.FieldPath},
		{Name: "tags", Type: shared.FieldList},
		{Name: "externals", Type: shared.FieldMap},
	}
	p := pluginFrom(t, `    rules     = ["./rules", "/abs/x.yar", "more/*.yar"]
    spool     = "tmp"
    tags      = "one"
    externals = { owner = "", level = 3, on = true }
`)
	js, diags := DecodePluginBody(p, schema, nil)
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", positions(diags))
	}
	dir := filepath.Dir(p.DefRange.Filename)
	want := fmt.Sprintf(`{"externals":{"level":3,"on":true,"owner":""},"rules":[%q,"/abs/x.yar",%q],"spool":%q,"tags":["one"]}`,
		filepath.Join(dir, "rules"), filepath.Join(dir, "more/*.yar"), filepath.Join(dir, "tmp"))
	if string(js) != want {
		t.Errorf("JSON\n got  %s\n want %s", js, want)
	}

	p = pluginFrom(t, `    rules     = [["nested"]]
    externals = { a = ["list"] }
    tags      = { a = 1 }
`)
	_, diags = DecodePluginBody(p, schema, nil)
	wantDiags(t, diags, []string{
		`4:17: plugin "clamav": config.rules: want a string or a list of strings`,
		`5:17: plugin "clamav": config.externals.a: want a string, a number or a bool, not a list`,
		`6:17: plugin "clamav": config.tags: want a string or a list of strings, not an object`,
	})
}

// TestCompositionPolicyFaults: max_verdict, weight and malicious_quorum are
// checked at their lines.
func TestCompositionPolicyFaults(t *testing.T) {
	dir := t.TempDir()
	writeBinary(t, filepath.Join(dir, "p"), "p")
	src := `engine {
  malicious_quorum = 3
}
plugin "a" {
  path        = "p"
  max_verdict = "benign"
}
plugin "b" {
  path   = "p"
  weight = 1.5
}
`
	_, diags := Parse([]byte(src), filepath.Join(dir, "engine.hcl"))
	wantDiags(t, diags, []string{
		`2:22: engine.malicious_quorum: 3 is more than the 2 enabled plugins`,
		`6:17: plugin "a": max_verdict: invalid value "benign"`,
		`10:12: plugin "b": weight: must be between 0 and 1, not 1.5`,
	})
}
