package scanner

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/shared"
)

func TestParseConfigDefaults(t *testing.T) {
	for _, raw := range []string{"", "  ", "{}", "null", `{"address": null, "timeout": null}`} {
		cfg, err := ParseConfig([]byte(raw))
		if err != nil {
			t.Errorf("ParseConfig(%q): %v", raw, err)
			continue
		}
		if !cfg.Equal(DefaultConfig()) {
			t.Errorf("ParseConfig(%q) = %+v, want the defaults %+v", raw, cfg, DefaultConfig())
		}
	}
	d := DefaultConfig()
	if !slices.Equal(d.Address, Addresses{"unix:///run/clamav/clamd.ctl"}) || d.MaxSignatureAge != 7*24*time.Hour || d.Timeout != 30*time.Second || d.MaxStreamSize != 25<<20 ||
		d.MaxConnections != 8 || d.Confidence != 1.0 {
		t.Errorf("DefaultConfig() = %+v", d)
	}
}

func TestParseConfigValues(t *testing.T) {
	tests := []struct {
		raw  string
		want Config
	}{
		{`{"address":"tcp://127.0.0.1:3310","timeout":"1m30s","max_stream_size":1048576,"max_connections":2,"confidence":0.75}`,
			Config{Address: Addresses{"tcp://127.0.0.1:3310"}, Timeout: 90 * time.Second, MaxStreamSize: 1 << 20, MaxConnections: 2, Confidence: 0.75, MaxSignatureAge: DefaultMaxSignatureAge}},
		// A pool of clamds, and a managed clamd with no address.
		{`{"address":["unix:///a.sock","tcp://127.0.0.1:3310"]}`, func() Config {
			c := DefaultConfig()
			c.Address = Addresses{"unix:///a.sock", "tcp://127.0.0.1:3310"}
			return c
		}()},
		{fmt.Sprintf(`{"database":%q,"max_signature_age":"0s"}`, repoSignatures(t)), func() Config {
			c := DefaultConfig()
			c.Address, c.Database, c.MaxSignatureAge = nil, repoSignatures(t), 0
			return c
		}()},
		// Sizes as a person writes them, and clamd's K/M/G.
		{`{"max_stream_size":"25M"}`, func() Config { c := DefaultConfig(); c.MaxStreamSize = 25 << 20; return c }()},
		{`{"max_stream_size":"100MiB"}`, func() Config { c := DefaultConfig(); c.MaxStreamSize = 100 << 20; return c }()},
		{`{"max_stream_size":"4096"}`, func() Config { c := DefaultConfig(); c.MaxStreamSize = 4096; return c }()},
		// Whole numbers written as floats by some encoders.
		{`{"max_connections":8.0,"max_stream_size":1024.0}`, func() Config { c := DefaultConfig(); c.MaxStreamSize = 1024; return c }()},
		{`{"confidence":0}`, func() Config { c := DefaultConfig(); c.Confidence = 0; return c }()},
		{`{"confidence":1}`, DefaultConfig()},
		{`{"address":"/var/run/clamav/clamd.ctl"}`, func() Config { c := DefaultConfig(); c.Address = Addresses{"/var/run/clamav/clamd.ctl"}; return c }()},
	}
	for _, tt := range tests {
		got, err := ParseConfig([]byte(tt.raw))
		if err != nil {
			t.Errorf("ParseConfig(%s): %v", tt.raw, err)
			continue
		}
		if !got.Equal(tt.want) {
			t.Errorf("ParseConfig(%s) = %+v, want %+v", tt.raw, got, tt.want)
		}
	}
}

func TestParseConfigFaultsNameTheirField(t *testing.T) {
	tests := []struct {
		raw        string
		wantFields []string
		wantText   string
	}{
		{`{"adress":"unix:///x.sock"}`, []string{"adress"}, "unknown attribute"},
		{`{"address":"clamd.sock"}`, []string{"address"}, "no scheme"},
		{`{"address":"http://x:1"}`, []string{"address"}, "unsupported scheme"},
		{`{"address":42}`, []string{"address"}, "clamd address"},
		{`{"address":["unix:///a.sock","nowhere"]}`, []string{"address[1]"}, "no scheme"},
		{`{"address":["unix:///a.sock","unix:///a.sock"]}`, []string{"address[1]"}, "twice"},
		{`{"address":[]}`, []string{"address"}, "empty"},
		{`{"address":"unix:///a.sock","database":"/var/lib/clamav"}`, []string{"address", "database"}, "not both"},
		{`{"database":"/nonexistent/clamav"}`, []string{"database"}, "no such file"},
		{`{"max_signature_age":"-1h"}`, []string{"max_signature_age"}, "0 (no check) or more"},
		{`{"timeout":"soon"}`, []string{"timeout"}, "duration"},
		{`{"timeout":30}`, []string{"timeout"}, "duration"},
		{`{"timeout":"-1s"}`, []string{"timeout"}, "more than 0"},
		{`{"timeout":"0s"}`, []string{"timeout"}, "more than 0"},
		{`{"max_stream_size":"25 parsecs"}`, []string{"max_stream_size"}, "unit"},
		{`{"max_stream_size":0}`, []string{"max_stream_size"}, "more than 0"},
		{`{"max_stream_size":-5}`, []string{"max_stream_size"}, "more than 0"},
		{`{"max_stream_size":1.5}`, []string{"max_stream_size"}, "whole number"},
		{`{"max_stream_size":"5G"}`, []string{"max_stream_size"}, "4 GiB"},
		{`{"max_stream_size":true}`, []string{"max_stream_size"}, "whole number"},
		{`{"max_connections":0}`, []string{"max_connections"}, "between 1 and"},
		{`{"max_connections":2.5}`, []string{"max_connections"}, "whole number"},
		{`{"max_connections":"8"}`, []string{"max_connections"}, "whole number"},
		{`{"confidence":1.5}`, []string{"confidence"}, "between 0 and 1"},
		{`{"confidence":-0.1}`, []string{"confidence"}, "between 0 and 1"},
		{`{"confidence":"high"}`, []string{"confidence"}, "want a number"},
		// Every fault at once, not just the first.
		{`{"timeout":"x","confidence":2,"colour":"red"}`, []string{"colour", "confidence", "timeout"}, ""},
		{`[1,2]`, []string{""}, "not a JSON object"},
		{`{"address":`, []string{""}, "not a JSON object"},
		{`{} {}`, []string{""}, "more than one JSON value"},
	}
	for _, tt := range tests {
		cfg, err := ParseConfig([]byte(tt.raw))
		var ce *shared.ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("ParseConfig(%s) = %+v, %v; want a *shared.ConfigError", tt.raw, cfg, err)
			continue
		}
		var fields []string
		for _, f := range ce.Fields {
			fields = append(fields, f.Field)
			if f.Message == "" {
				t.Errorf("ParseConfig(%s): field %q has no message", tt.raw, f.Field)
			}
		}
		slices.Sort(fields)
		if !slices.Equal(fields, tt.wantFields) {
			t.Errorf("ParseConfig(%s) faults in %q, want %q (%v)", tt.raw, fields, tt.wantFields, err)
		}
		if !strings.Contains(err.Error(), tt.wantText) {
			t.Errorf("ParseConfig(%s) error %q does not say %q", tt.raw, err, tt.wantText)
		}
	}
}

func TestConfigSchemaDefaultsParse(t *testing.T) {
	// The defaults the schema advertises must be what an empty block
	// means, in the schema's own types.
	raw := "{"
	for _, f := range ConfigSchema() {
		if f.Default == "" {
			continue // database: no default
		}
		if raw != "{" {
			raw += ","
		}
		switch f.Type {
		case shared.FieldString, shared.FieldDuration, shared.FieldSize:
			raw += `"` + f.Name + `":"` + f.Default + `"`
		default:
			raw += `"` + f.Name + `":` + f.Default
		}
	}
	raw += "}"
	cfg, err := ParseConfig([]byte(raw))
	if err != nil {
		t.Fatalf("ParseConfig(%s): %v", raw, err)
	}
	if !cfg.Equal(DefaultConfig()) {
		t.Errorf("schema defaults %s parse to %+v, want %+v", raw, cfg, DefaultConfig())
	}
}

// repoSignatures is the repository's test signature folder.
func repoSignatures(t *testing.T) string {
	t.Helper()
	dir, err := devclamd.RepoSignatureDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// Artifacts by reference queue on the pipe four times as deep as
// max_connections, at most 32, and never shallower than max_connections.
func TestPipeDepth(t *testing.T) {
	for _, c := range []struct{ conns, want int }{{1, 4}, {2, 8}, {8, 32}, {10, 32}, {32, 32}, {100, 100}} {
		cfg := DefaultConfig()
		cfg.MaxConnections = c.conns
		if got := pipeDepth(cfg); got != c.want {
			t.Errorf("max_connections %d: pipe depth %d, want %d", c.conns, got, c.want)
		}
	}
}
