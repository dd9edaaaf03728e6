package scanner

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/microengine/microengine/plugins/clamav/clamd"
	"github.com/microengine/microengine/plugins/clamav/daemon"
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
	// DefaultMaxSignatureAge: the official daily database is rebuilt
	// several times a day; a week without an update means freshclam is
	// broken, and the signatures miss a week of new malware.
	DefaultMaxSignatureAge = 7 * 24 * time.Hour
)

// Bounds on config values.
const (
	// maxStreamSizeLimit is the most clamd's StreamMaxLength accepts.
	maxStreamSizeLimit = 4 << 30
	maxConnectionsMax  = 1024
	// maxAddresses bounds a pool of clamds.
	maxAddresses = 64
)

// Config names, as written in the plugin's block of engine.hcl.
const (
	keyAddress         = "address"
	keyDatabase        = "database"
	keyTimeout         = "timeout"
	keyMaxStreamSize   = "max_stream_size"
	keyMaxConnections  = "max_connections"
	keyConfidence      = "confidence"
	keyMaxSignatureAge = "max_signature_age"
)

// Config is the plugin's configuration.
type Config struct {
	// Address lists the clamds to use, each unix:///path or
	// tcp://host:port: one, or a pool. Empty with Database set.
	Address Addresses `json:"address"`
	// Database, when set, is the signature folder of a clamd the plugin
	// runs and supervises itself (see package daemon); Address is then
	// empty.
	Database string `json:"database"`
	// Timeout bounds each clamd call (a whole INSTREAM included).
	Timeout time.Duration `json:"timeout"`
	// MaxStreamSize is the largest artifact sent to clamd. Keep it at or
	// below clamd's StreamMaxLength: anything larger is answered unknown.
	MaxStreamSize shared.Size `json:"max_stream_size"`
	// MaxConnections caps concurrent scans (clamd connections).
	MaxConnections int `json:"max_connections"`
	// Confidence given to clamd's malicious and benign answers, 0..1.
	Confidence float64 `json:"confidence"`
	// MaxSignatureAge: signatures older than this (by the daily
	// database's date in VERSION) make health degraded and benign answers
	// unknown. 0 turns the check off.
	MaxSignatureAge time.Duration `json:"max_signature_age"`
}

// Addresses is one clamd address or a list of them. It reads a JSON string
// or a JSON list of strings.
type Addresses []string

// UnmarshalJSON reads a string or a list of strings.
func (a *Addresses) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Addresses{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("want a clamd address or a list of them, got %s", b)
	}
	*a = list
	return nil
}

// Equal reports whether c and o are the same configuration.
func (c Config) Equal(o Config) bool {
	return reflect.DeepEqual(c, o)
}

// Managed reports whether the plugin runs its own clamd.
func (c Config) Managed() bool { return c.Database != "" }

// DefaultConfig is the configuration before Configure is called and what
// an empty config block means.
func DefaultConfig() Config {
	return Config{
		Address:         Addresses{DefaultAddress},
		Timeout:         DefaultTimeout,
		MaxStreamSize:   DefaultMaxStreamSize,
		MaxConnections:  DefaultMaxConnections,
		Confidence:      DefaultConfidence,
		MaxSignatureAge: DefaultMaxSignatureAge,
	}
}

// ConfigSchema describes the config block to the host.
func ConfigSchema() []shared.ConfigField {
	return []shared.ConfigField{
		{Name: keyAddress, Type: shared.FieldList, Default: `["` + DefaultAddress + `"]`,
			Description: "clamd address, unix:///path/to/clamd.sock or tcp://host:port, or a list of them: a pool, each health-checked, scans to the least busy; not with database"},
		{Name: keyDatabase, Type: shared.FieldPath,
			Description: "signature folder (e.g. /var/lib/clamav) of a clamd the plugin starts and supervises itself; not with address"},
		{Name: keyTimeout, Type: shared.FieldDuration, Default: DefaultTimeout.String(),
			Description: "limit on each clamd call, a whole scan included"},
		{Name: keyMaxStreamSize, Type: shared.FieldSize, Default: "25M",
			Description: "largest artifact sent to clamd; larger ones are answered unknown. Keep it at or below clamd's StreamMaxLength"},
		{Name: keyMaxConnections, Type: shared.FieldNumber, Default: strconv.Itoa(DefaultMaxConnections),
			Description: "most concurrent scans (clamd connections); keep it at or below clamd's MaxThreads. Artifacts by reference queue up to four times as many (at most 32) FILDES on one connection"},
		{Name: keyConfidence, Type: shared.FieldNumber, Default: "1.0",
			Description: "confidence (0..1) given to clamd's malicious and benign answers; it drives the bid"},
		{Name: keyMaxSignatureAge, Type: shared.FieldDuration, Default: "168h",
			Description: "signatures older than this make health degraded and benign answers unknown; 0 turns the check off"},
	}
}

// ParseConfig reads the config block as the host hands it over: a JSON
// object, durations as Go duration strings, sizes as integer bytes (size
// strings such as "25M" are accepted too), address as a string or a list.
// A missing or null attribute takes its default. Every fault is reported,
// each under its attribute's name, in one *shared.ConfigError.
func ParseConfig(raw []byte) (Config, error) {
	cfg := DefaultConfig()
	cfg.Address = nil // the default applies only without database
	if err := shared.DecodeConfig(raw, &cfg); err != nil {
		return DefaultConfig(), err
	}
	for i := range cfg.Address {
		cfg.Address[i] = strings.TrimSpace(cfg.Address[i])
	}
	if cfg.Database = strings.TrimSpace(cfg.Database); cfg.Database != "" {
		// The host sends it absolute; a relative one given straight to
		// the plugin means the working folder's.
		if abs, err := filepath.Abs(cfg.Database); err == nil {
			cfg.Database = abs
		}
	}
	if cfg.Database == "" && len(cfg.Address) == 0 {
		cfg.Address = Addresses{DefaultAddress}
	}
	return cfg, nil
}

// CheckConfig checks the values DecodeConfig read; its faults are reported
// with the decoding faults.
func (c Config) CheckConfig(ce *shared.ConfigError) {
	switch {
	case strings.TrimSpace(c.Database) != "" && len(c.Address) > 0:
		ce.Add(keyAddress, "set address (clamds someone else runs) or database (a clamd the plugin runs), not both")
	case len(c.Address) > maxAddresses:
		ce.Add(keyAddress, "%d addresses is more than %d", len(c.Address), maxAddresses)
	case c.Address != nil && len(c.Address) == 0:
		ce.Add(keyAddress, "the list is empty")
	}
	seen := map[string]bool{}
	for i, a := range c.Address {
		name := keyAddress
		if len(c.Address) > 1 {
			name = fmt.Sprintf("%s[%d]", keyAddress, i)
		}
		addr, err := clamd.ParseAddress(a)
		if err != nil {
			ce.Add(name, "%v", err)
			continue
		}
		if seen[addr.String()] {
			ce.Add(name, "%s is listed twice", addr)
		}
		seen[addr.String()] = true
	}
	if db := strings.TrimSpace(c.Database); db != "" {
		if err := daemon.CheckDatabase(db); err != nil {
			ce.Add(keyDatabase, "%v", err)
		}
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
	if c.MaxSignatureAge < 0 {
		ce.Add(keyMaxSignatureAge, "must be 0 (no check) or more, got %q", c.MaxSignatureAge)
	}
}
