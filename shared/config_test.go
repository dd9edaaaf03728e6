package shared

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

type testSettings struct {
	Address  string        `json:"address"`
	Strict   bool          `json:"strict"`
	Timeout  time.Duration `json:"timeout"`
	MaxSize  Size          `json:"max_size"`
	Conns    int           `json:"conns"`
	Small    int8          `json:"small"`
	Count    uint16        `json:"count"`
	Ratio    float64       `json:"ratio"`
	Paths    []string      `json:"paths"`
	Untagged string
	Skipped  string `json:"-"`
	hidden   string
}

func testDefaults() testSettings {
	return testSettings{Address: "unix:///x.sock", Timeout: 30 * time.Second, MaxSize: 25 << 20, Conns: 8, Ratio: 1, hidden: "h"}
}

func TestDecodeConfigKeepsDefaults(t *testing.T) {
	for _, raw := range []string{"", "  \n", "{}", "null", `{"address": null, "timeout": null, "max_size": null}`} {
		got := testDefaults()
		if err := DecodeConfig([]byte(raw), &got); err != nil {
			t.Errorf("DecodeConfig(%q): %v", raw, err)
			continue
		}
		if !reflect.DeepEqual(got, testDefaults()) {
			t.Errorf("DecodeConfig(%q) = %+v, want the defaults %+v", raw, got, testDefaults())
		}
	}
}

func TestDecodeConfigValues(t *testing.T) {
	raw := `{"address":"tcp://127.0.0.1:3310","strict":true,"timeout":"1m30s","max_size":"100MiB",
		"conns":2.0,"small":-128,"count":65535,"ratio":0.25,"paths":["a","b"],"Untagged":"u"}`
	got := testDefaults()
	if err := DecodeConfig([]byte(raw), &got); err != nil {
		t.Fatalf("DecodeConfig: %v", err)
	}
	want := testSettings{Address: "tcp://127.0.0.1:3310", Strict: true, Timeout: 90 * time.Second, MaxSize: 100 << 20,
		Conns: 2, Small: -128, Count: 65535, Ratio: 0.25, Paths: []string{"a", "b"}, Untagged: "u", hidden: "h"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DecodeConfig = %+v, want %+v", got, want)
	}

	// Sizes as the host sends them (bytes) and as a person writes them.
	for raw, want := range map[string]Size{
		`{"max_size":4096}`: 4096, `{"max_size":"4096"}`: 4096, `{"max_size":"25M"}`: 25 << 20,
		`{"max_size":1024.0}`: 1024, `{"max_size":" 1GiB "}`: 1 << 30, `{"max_size":"2KB"}`: 2000,
	} {
		got := testDefaults()
		if err := DecodeConfig([]byte(raw), &got); err != nil || got.MaxSize != want {
			t.Errorf("DecodeConfig(%s): max_size = %d, %v; want %d", raw, got.MaxSize, err, want)
		}
	}
}

func TestDecodeConfigFaultsNameTheirField(t *testing.T) {
	tests := []struct {
		raw        string
		wantFields []string
		wantText   string
	}{
		{`{"adress":"x"}`, []string{"adress"}, "unknown attribute (known: Untagged, address, conns, count, max_size, paths, ratio, small, strict, timeout)"},
		{`{"Skipped":"x"}`, []string{"Skipped"}, "unknown attribute"},
		{`{"hidden":"x"}`, []string{"hidden"}, "unknown attribute"},
		{`{"ADDRESS":"x"}`, []string{"ADDRESS"}, "unknown attribute"}, // exact names, unlike encoding/json
		{`{"address":42}`, []string{"address"}, "want a string, got 42"},
		{`{"strict":"yes"}`, []string{"strict"}, `want true or false, got "yes"`},
		{`{"timeout":30}`, []string{"timeout"}, `want a duration such as "30s", got 30`},
		{`{"timeout":"soon"}`, []string{"timeout"}, `want a duration such as "30s"`},
		{`{"max_size":"25 parsecs"}`, []string{"max_size"}, "unknown unit"},
		{`{"max_size":1.5}`, []string{"max_size"}, "want a whole number of bytes"},
		{`{"max_size":true}`, []string{"max_size"}, "want a whole number of bytes"},
		{`{"conns":2.5}`, []string{"conns"}, "want a whole number, got 2.5"},
		{`{"conns":"8"}`, []string{"conns"}, `want a whole number, got "8"`},
		{`{"small":128}`, []string{"small"}, "want a whole number from -128 to 127, got 128"},
		{`{"count":-1}`, []string{"count"}, "want a whole number from 0 to 65535, got -1"},
		{`{"count":65536}`, []string{"count"}, "from 0 to 65535"},
		{`{"ratio":"high"}`, []string{"ratio"}, `want a number, got "high"`},
		{`{"paths":"a"}`, []string{"paths"}, "want a []string"},
		// Every fault at once, not just the first.
		{`{"timeout":"x","conns":"y","colour":"red"}`, []string{"colour", "conns", "timeout"}, ""},
		{`[1,2]`, []string{""}, "config is not a JSON object"},
		{`"text"`, []string{""}, "config is not a JSON object"},
		{`{"address":`, []string{""}, "config is not a JSON object"},
		{`{} {}`, []string{""}, "config holds more than one JSON value"},
	}
	for _, tt := range tests {
		got := testDefaults()
		err := DecodeConfig([]byte(tt.raw), &got)
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("DecodeConfig(%s) = %v; want a *ConfigError", tt.raw, err)
			continue
		}
		var fields []string
		for _, f := range ce.Fields {
			fields = append(fields, f.Field)
			if f.Message == "" {
				t.Errorf("DecodeConfig(%s): field %q has no message", tt.raw, f.Field)
			}
		}
		slices.Sort(fields)
		if !slices.Equal(fields, tt.wantFields) {
			t.Errorf("DecodeConfig(%s) faults in %q, want %q (%v)", tt.raw, fields, tt.wantFields, err)
		}
		if !strings.Contains(err.Error(), tt.wantText) {
			t.Errorf("DecodeConfig(%s) error %q does not say %q", tt.raw, err, tt.wantText)
		}
		if !reflect.DeepEqual(got, testDefaults()) {
			t.Errorf("DecodeConfig(%s) changed its target on a fault: %+v", tt.raw, got)
		}
	}
}

// checkedSettings refuses a ratio above 1 and requires a name.
type checkedSettings struct {
	Name  string  `json:"name"`
	Ratio float64 `json:"ratio"`
}

func (c checkedSettings) CheckConfig(ce *ConfigError) {
	if c.Name == "" {
		ce.Add("name", "required")
	}
	if c.Ratio > 1 {
		ce.Add("ratio", "must be at most 1, got %v", c.Ratio)
	}
}

func TestDecodeConfigCheckerJoinsTheFaults(t *testing.T) {
	var c checkedSettings
	err := DecodeConfig([]byte(`{"ratio":2,"colour":"red"}`), &c)
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("DecodeConfig = %v; want a *ConfigError", err)
	}
	want := "invalid plugin config: colour: unknown attribute (known: name, ratio); name: required; ratio: must be at most 1, got 2"
	if err.Error() != want {
		t.Errorf("DecodeConfig error\n %s\nwant\n %s", err, want)
	}
	if c != (checkedSettings{}) {
		t.Errorf("a refused block changed the target: %+v", c)
	}
	if err := DecodeConfig([]byte(`{"name":"n","ratio":0.5}`), &c); err != nil || c != (checkedSettings{Name: "n", Ratio: 0.5}) {
		t.Errorf("DecodeConfig = %+v, %v", c, err)
	}
}

func TestDecodeConfigWantsAPointerToAStruct(t *testing.T) {
	for _, v := range []any{nil, testSettings{}, (*testSettings)(nil), new(int)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("DecodeConfig(%T) did not panic", v)
				}
			}()
			_ = DecodeConfig([]byte(`{}`), v)
		}()
	}
}

func TestSizeString(t *testing.T) {
	for n, want := range map[Size]string{
		0: "0B", 1: "1B", 1000: "1000B", 1024: "1KiB", 1536: "1536B", 25 << 20: "25MiB",
		3 << 30: "3GiB", 2 << 40: "2TiB", 1<<20 + 1: "1048577B",
	} {
		if got := n.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(n), got, want)
		}
		if back, err := ParseSize(want); err != nil || Size(back) != n {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", want, back, err, int64(n))
		}
	}
}
