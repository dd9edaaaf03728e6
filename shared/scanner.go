// Package shared is the contract between the microengine host and its
// scanner plugins: the Scanner interface and its types, the go-plugin
// handshake and plugin set, the gRPC shims, and Serve for plugin mains.
//
// A plugin imports only this package (and its own packages); the host knows
// plugins only as binaries and talks to them through the same shims.
package shared

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
)

// Verdict is a marketplace verdict. An error is never benign: every fault
// (backend down, timeout, truncated stream, limit hit) is VerdictUnknown.
type Verdict string

const (
	VerdictMalicious  Verdict = "malicious"
	VerdictBenign     Verdict = "benign"
	VerdictSuspicious Verdict = "suspicious"
	VerdictUnknown    Verdict = "unknown"
)

// ParseVerdict accepts a verdict name in any case.
func ParseVerdict(s string) (Verdict, error) {
	switch v := Verdict(strings.ToLower(strings.TrimSpace(s))); v {
	case VerdictMalicious, VerdictBenign, VerdictSuspicious, VerdictUnknown:
		return v, nil
	}
	return "", fmt.Errorf("unknown verdict %q (want malicious, benign, suspicious or unknown)", s)
}

// ArtifactType says what the content of an artifact is: the bytes of a file,
// or a URL (the content is then the URL itself).
type ArtifactType string

const (
	ArtifactFile ArtifactType = "file"
	ArtifactURL  ArtifactType = "url"
)

// ParseArtifactType accepts the marketplace's spellings in any case.
func ParseArtifactType(s string) (ArtifactType, error) {
	switch t := ArtifactType(strings.ToLower(strings.TrimSpace(s))); t {
	case ArtifactFile, ArtifactURL:
		return t, nil
	}
	return "", fmt.Errorf("unknown artifact type %q (want file or url)", s)
}

// Artifact is one thing to scan. Content is streamed: neither side holds the
// whole artifact.
type Artifact struct {
	ID   string
	Type ArtifactType
	// Size in bytes when known, -1 when not. When it is known, a stream that
	// ends short or long of it is a fault (the verdict becomes unknown).
	Size     int64
	Metadata map[string]string
	// Content is read by the host's shim in the calling goroutine: a
	// host-side reader must not block past the scan's context, or
	// cancellation waits for it.
	Content io.Reader
	// SHA256 is the content's sha256 in lowercase hex when the host knows
	// it, "" when not.
	SHA256 string
	// File is the content as an open file, when it is one.
	//
	// On the host's side it is optional: when set (a regular file holding
	// exactly Size bytes from offset 0, the same bytes Content reads), the
	// shim passes the artifact by reference to a plugin that takes it so:
	// a new read-only descriptor of the file (or, with FileExclusive, the
	// host's own read-only one), never a path. Content is then not read.
	//
	// On the plugin's side it is set when the artifact came by reference:
	// a read-only descriptor that the shim owns and lets go of once Scan
	// returns (do not close it, or keep it or Content past the answer:
	// the shim may reuse the same *os.File for a later artifact). Content reads the same bytes
	// with pread, so a scanner may use either; the file offset is the
	// scanner's own.
	File *os.File
	// FileExclusive, on the host's side, says File was opened read-only
	// for this scan, is read by the host only by offset (pread), and goes
	// to no other plugin: the shim may then pass File's own descriptor,
	// once it has checked that it is read-only, instead of opening a new
	// one (an open through /proc/self/fd, ~6 µs of a small file's host
	// CPU). The plugin still gets a read-only descriptor whose offset is
	// its own. The engine sets it for one plugin of an artifact at most.
	FileExclusive bool
}

// Result is a scanner's answer for one artifact.
type Result struct {
	Verdict Verdict
	// Confidence in the verdict, 0..1. It drives the bid.
	Confidence    float64
	MalwareFamily string
	Heuristic     bool
	Metadata      map[string]string
	// Reason explains an unknown verdict (or remarks on any other).
	Reason       string
	BytesScanned int64
}

// ClampConfidence bounds a confidence to [0, 1]; NaN counts as none.
func ClampConfidence(c float64) float64 {
	switch {
	case math.IsNaN(c) || c < 0:
		return 0
	case c > 1:
		return 1
	}
	return c
}

// Unknown is the answer for every fault: never benign.
func Unknown(format string, args ...any) Result {
	return Result{Verdict: VerdictUnknown, Reason: fmt.Sprintf(format, args...)}
}

// ConfigField describes one attribute of a plugin's config block. The host
// decodes the block against these fields, so type errors point at file:line.
type ConfigField struct {
	Name string
	// Type is one of the FieldType constants.
	Type        FieldType
	Required    bool
	Default     string
	Description string
}

// FieldType is the type of a plugin config attribute as written in engine.hcl.
// The host hands the plugin canonical JSON: strings and bools as they are,
// numbers as JSON numbers, durations as Go duration strings ("30s"), sizes
// as integer bytes, lists as arrays of strings, maps as objects of strings,
// numbers and bools. Paths are made absolute against engine.hcl's folder,
// so a plugin (which runs in the host's working directory) finds what the
// file names; a path with glob characters keeps them.
type FieldType string

const (
	FieldString   FieldType = "string"
	FieldNumber   FieldType = "number"
	FieldBool     FieldType = "bool"
	FieldDuration FieldType = "duration"
	FieldSize     FieldType = "size"
	// FieldList is a list of strings; its Default is a JSON array.
	FieldList FieldType = "list"
	// FieldPath is one path, FieldPathList a list of them (Default a JSON
	// array), resolved against engine.hcl's folder.
	FieldPath     FieldType = "path"
	FieldPathList FieldType = "paths"
	// FieldMap is an object whose values are strings, numbers or bools;
	// its Default is a JSON object.
	FieldMap FieldType = "map"
)

// Sample is content a plugin vouches for: the conformance suite scans it and
// expects the stated verdict (and family, when one is given).
type Sample struct {
	Name string
	// Type is the artifact type of the sample; empty means file.
	Type          ArtifactType
	Content       []byte
	Verdict       Verdict
	MalwareFamily string
}

// Info describes a plugin.
type Info struct {
	Name              string
	Version           string
	Vendor            string
	VendorVersion     string
	SignaturesVersion string
	ArtifactTypes     []ArtifactType
	ConfigSchema      []ConfigField
	Samples           []Sample
	// HasBackend is true when the plugin depends on an external service
	// that can become unreachable.
	HasBackend bool
	// ByReference declares that the plugin takes artifacts by reference
	// (Artifact.File set, see there): the host then passes an open file
	// instead of streaming its bytes. Seen from the host it is true only
	// when the plugin also listens for descriptors.
	ByReference bool
}

// Supports reports whether the plugin scans artifacts of type t.
func (i Info) Supports(t ArtifactType) bool {
	for _, s := range i.ArtifactTypes {
		if s == t {
			return true
		}
	}
	return false
}

// Health is a plugin's own view of whether it can scan, reached through its
// backend.
type Health struct {
	Healthy           bool
	Message           string
	VendorVersion     string
	SignaturesVersion string
	// Backends, when the plugin uses several backend instances (a pool of
	// clamds), is the state of each; the host exports them as metrics.
	Backends []BackendHealth
}

// BackendHealth is one backend instance as a plugin's health check saw it.
type BackendHealth struct {
	// Name tells it apart, e.g. its address.
	Name    string
	Healthy bool
	// InFlight is how many scans it holds.
	InFlight int64
}

// FieldError is a fault in one attribute of a plugin's config block.
type FieldError struct {
	Field   string
	Message string
}

// ConfigError carries every fault a plugin found in its configuration.
type ConfigError struct {
	Fields []FieldError
}

func (e *ConfigError) Error() string {
	parts := make([]string, 0, len(e.Fields))
	for _, f := range e.Fields {
		if f.Field == "" {
			parts = append(parts, f.Message)
		} else {
			parts = append(parts, f.Field+": "+f.Message)
		}
	}
	sort.Strings(parts)
	return "invalid plugin config: " + strings.Join(parts, "; ")
}

// Add records a fault; it returns the receiver so checks read as a chain.
func (e *ConfigError) Add(field, format string, args ...any) *ConfigError {
	e.Fields = append(e.Fields, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	return e
}

// Err returns nil when no fault was recorded.
func (e *ConfigError) Err() error {
	if e == nil || len(e.Fields) == 0 {
		return nil
	}
	return e
}

// Scanner is what every plugin implements and what the host calls.
type Scanner interface {
	// Info describes the plugin. It is cheap and may be called at any time.
	Info(ctx context.Context) (Info, error)
	// Configure applies the plugin's config block, given as a JSON object.
	// It may be called more than once and must be idempotent. Faults are
	// returned as a *ConfigError.
	Configure(ctx context.Context, configJSON []byte) error
	// Health reaches the backend, when there is one.
	Health(ctx context.Context) (Health, error)
	// Scan reads the artifact's content and answers. It must stop promptly
	// when ctx is done.
	Scan(ctx context.Context, a Artifact) (Result, error)
}
