package scanner

import (
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
	Address string `json:"address"`
	// Timeout bounds each clamd call (a whole INSTREAM included).
	Timeout time.Duration `json:"timeout"`
	// MaxStreamSize is the largest artifact sent to clamd. Keep it at or
	// below clamd's StreamMaxLength: anything larger is answered unknown.
	MaxStreamSize shared.Size `json:"max_stream_size"`
	// MaxConnections caps concurrent scans (clamd connections).
	MaxConnections int `json:"max_connections"`
	// Confidence given to clamd's malicious and benign answers, 0..1.
	Confidence float64 `json:"confidence"`
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
	if err := shared.DecodeConfig(raw, &cfg); err != nil {
		return DefaultConfig(), err
	}
	cfg.Address = strings.TrimSpace(cfg.Address)
	return cfg, nil
}

// CheckConfig checks the values DecodeConfig read; its faults are reported
// with the decoding faults.
func (c Config) CheckConfig(ce *shared.ConfigError) {
	if _, err := clamd.ParseAddress(c.Address); err != nil {
		ce.Add(keyAddress, "%v", err)
	}
	if c.Timeout <= 0 {
		ce.Add(keyTimeout, "must be more than 0, got %q", c.Timeout)
	}
	switch {
	case c.MaxStreamSize <= 0:
		ce.Add(keyMaxStreamSize, "must be more than 0 bytes")
	case c.MaxStreamSize > maxStreamSizeLimit:
		ce.Add(keyMaxStreamSize, "%d bytes is more than clamd's StreamMaxLength can be (4 GiB)", c.MaxStreamSize)
	}
	if c.MaxConnections < 1 || c.MaxConnections > maxConnectionsMax {
		ce.Add(keyMaxConnections, "must be between 1 and %d, got %d", maxConnectionsMax, c.MaxConnections)
	}
	if c.Confidence < 0 || c.Confidence > 1 {
		ce.Add(keyConfidence, "must be between 0 and 1, got %v", c.Confidence)
	}
}
