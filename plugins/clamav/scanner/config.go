package scanner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/microengine/microengine/plugins/clamav/clamd"
	"github.com/microengine/microengine/shared"
)

// Defaults for the plugin's config block.
const (
	// DefaultAddress is where Debian's clamav-daemon listens.
	DefaultAddress = "unix:///run/clamav/clamd.ctl"
	// DefaultTimeout bounds one clamd call.
	DefaultTimeout = 30 * time.Second
	// DefaultMaxStreamSize is Debian's StreamMaxLength (25M).
	DefaultMaxStreamSize = 25 << 20
	// DefaultMaxConnections matches a packaged clamd's thread count with
	// room to spare (MaxThreads 12 on Debian).
	DefaultMaxConnections = 8
	DefaultConfidence     = 1.0
)

// Bounds on config values.
const (
	// maxStreamSizeLimit is the most clamd's StreamMaxLength accepts.
	maxStreamSizeLimit = 4 << 30
	maxConnectionsMax  = 1024
)

// Config names, as written in the plugin's block of engine.hcl.
const (
	keyAddress        = "address"
	keyTimeout        = "timeout"
	keyMaxStreamSize  = "max_stream_size"
	keyMaxConnections = "max_connections"
	keyConfidence     = "confidence"
)

// Config is the plugin's configuration. It is a comparable value: Configure
// compares it to the current one to stay idempotent.
type Config struct {
	// Address of clamd: unix:///path or tcp://host:port.
	Address string
	// Timeout bounds each clamd call (a whole INSTREAM included).
	Timeout time.Duration
	// MaxStreamSize is the largest artifact sent to clamd. Keep it at or
	// below clamd's StreamMaxLength: anything larger is answered unknown.
	MaxStreamSize int64
	// MaxConnections caps concurrent scans (clamd connections).
	MaxConnections int
	// Confidence given to clamd's malicious and benign answers, 0..1.
	Confidence float64
}

// DefaultConfig is the configuration before Configure is called and what
// an empty config block means.
func DefaultConfig() Config {
	return Config{
		Address:        DefaultAddress,
		Timeout:        DefaultTimeout,
		MaxStreamSize:  DefaultMaxStreamSize,
		MaxConnections: DefaultMaxConnections,
		Confidence:     DefaultConfidence,
	}
}

// ConfigSchema describes the config block to the host.
func ConfigSchema() []shared.ConfigField {
	return []shared.ConfigField{
		{Name: keyAddress, Type: shared.FieldString, Default: DefaultAddress,
			Description: "clamd address: unix:///path/to/clamd.sock or tcp://host:port"},
		{Name: keyTimeout, Type: shared.FieldDuration, Default: DefaultTimeout.String(),
			Description: "limit on each clamd call, a whole scan included"},
		{Name: keyMaxStreamSize, Type: shared.FieldSize, Default: "25M",
			Description: "largest artifact sent to clamd; larger ones are answered unknown. Keep it at or below clamd's StreamMaxLength"},
		{Name: keyMaxConnections, Type: shared.FieldNumber, Default: strconv.Itoa(DefaultMaxConnections),
			Description: "most concurrent scans (clamd connections); keep it at or below clamd's MaxThreads"},
		{Name: keyConfidence, Type: shared.FieldNumber, Default: "1.0",
			Description: "confidence (0..1) given to clamd's malicious and benign answers; it drives the bid"},
	}
}

// ParseConfig reads the config block as the host hands it over: a JSON
// object, durations as Go duration strings, sizes as integer bytes (size
// strings such as "25M" are accepted too). A missing or null attribute
// takes its default. Every fault is reported, each under its attribute's
// name, in one *shared.ConfigError.
func ParseConfig(raw []byte) (Config, error) {
	cfg := DefaultConfig()
	if len(bytes.TrimSpace(raw)) == 0 {
		return cfg, nil
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&fields); err != nil {
		return cfg, (&shared.ConfigError{}).Add("", "config is not a JSON object: %v", err)
	}
	if dec.More() {
		return cfg, (&shared.ConfigError{}).Add("", "config holds more than one JSON value")
	}
	if fields == nil { // the JSON was null
		return cfg, nil
	}
	ce := &shared.ConfigError{}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v := fields[name]
		if string(bytes.TrimSpace(v)) == "null" {
			continue
		}
		switch name {
		case keyAddress:
			s, err := jsonString(v)
			if err == nil {
				_, err = clamd.ParseAddress(s)
			}
			if err != nil {
				ce.Add(name, "%v", err)
				continue
			}
			cfg.Address = strings.TrimSpace(s)
		case keyTimeout:
			d, err := jsonDuration(v)
			if err != nil {
				ce.Add(name, "%v", err)
				continue
			}
			cfg.Timeout = d
		case keyMaxStreamSize:
			n, err := jsonSize(v)
			switch {
			case err != nil:
				ce.Add(name, "%v", err)
			case n <= 0:
				ce.Add(name, "must be more than 0 bytes")
			case n > maxStreamSizeLimit:
				ce.Add(name, "%d bytes is more than clamd's StreamMaxLength can be (4 GiB)", n)
			default:
				cfg.MaxStreamSize = n
			}
		case keyMaxConnections:
			n, err := jsonInt(v)
			switch {
			case err != nil:
				ce.Add(name, "%v", err)
			case n < 1 || n > maxConnectionsMax:
				ce.Add(name, "must be between 1 and %d, got %d", maxConnectionsMax, n)
			default:
				cfg.MaxConnections = int(n)
			}
		case keyConfidence:
			f, err := jsonFloat(v)
			switch {
			case err != nil:
				ce.Add(name, "%v", err)
			case f < 0 || f > 1:
				ce.Add(name, "must be between 0 and 1, got %v", f)
			default:
				cfg.Confidence = f
			}
		default:
			ce.Add(name, "unknown attribute (known: %s, %s, %s, %s, %s)",
				keyAddress, keyConfidence, keyMaxConnections, keyMaxStreamSize, keyTimeout)
		}
	}
	if err := ce.Err(); err != nil {
		return DefaultConfig(), err
	}
	return cfg, nil
}

func jsonString(v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("want a string, got %s", v)
	}
	return s, nil
}

func jsonNumber(v json.RawMessage) (json.Number, bool) {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return "", false
	}
	n, ok := x.(json.Number)
	return n, ok
}

func jsonInt(v json.RawMessage) (int64, error) {
	n, ok := jsonNumber(v)
	if !ok {
		return 0, fmt.Errorf("want a whole number, got %s", v)
	}
	if i, err := n.Int64(); err == nil {
		return i, nil
	}
	// 8.0 is a whole number too, as some encoders write it.
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, fmt.Errorf("want a whole number, got %s", v)
	}
	return int64(f), nil
}

func jsonFloat(v json.RawMessage) (float64, error) {
	n, ok := jsonNumber(v)
	if !ok {
		return 0, fmt.Errorf("want a number, got %s", v)
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("want a number, got %s", v)
	}
	return f, nil
}

func jsonDuration(v json.RawMessage) (time.Duration, error) {
	s, err := jsonString(v)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as \"30s\", got %s", v)
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("want a duration such as \"30s\": %w", err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be more than 0, got %q", s)
	}
	return d, nil
}

// jsonSize takes integer bytes, as the host sends them, or a size string
// ("25M"), as a person might write it.
func jsonSize(v json.RawMessage) (int64, error) {
	if _, ok := jsonNumber(v); ok {
		n, err := jsonInt(v)
		if err != nil {
			return 0, fmt.Errorf("want a whole number of bytes or a size such as \"25M\", got %s", v)
		}
		return n, nil
	}
	s, err := jsonString(v)
	if err != nil {
		return 0, fmt.Errorf("want a whole number of bytes or a size such as \"25M\", got %s", v)
	}
	return shared.ParseSize(s)
}
