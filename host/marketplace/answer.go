package marketplace

import (
	"encoding/json"
	"math/big"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"

	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/shared"
)

// Product names this engine in every answer's metadata: lowercase words
// joined by dashes, as ScanMetadata wants.
const Product = "microengine"

// Answer is what is posted to a bounty's response_url: an assertion
// (verdict, bid, metadata) or, in the arbitration phase, a vote (no bid).
type Answer struct {
	Verdict shared.Verdict `json:"verdict"`
	// Bid in wei, a bare JSON integer; nil in a vote.
	Bid      *big.Int `json:"bid,omitempty"`
	Metadata Metadata `json:"metadata"`
}

// Metadata follows polyswarm-artifact's ScanMetadata.
type Metadata struct {
	// MalwareFamily is required by the schema: "" when there is none.
	MalwareFamily string      `json:"malware_family"`
	Product       string      `json:"product"`
	Heuristic     bool        `json:"heuristic"`
	Confidence    float64     `json:"confidence"`
	Scanner       ScannerInfo `json:"scanner"`
	// Comments say why an answer is unknown (the standard SKIPPED:*
	// reasons) and what was assumed to accept the bounty.
	Comments []string `json:"comments,omitempty"`
	// Backends lists every plugin asked, with its own verdict, versions
	// and matches, so the composed verdict can be traced to each backend.
	Backends []Backend `json:"backends,omitempty"`
}

// Backend is one plugin's part in an answer.
type Backend struct {
	Name              string         `json:"name"`
	Verdict           shared.Verdict `json:"verdict"`
	Version           string         `json:"version,omitempty"`
	VendorVersion     string         `json:"vendor_version,omitempty"`
	SignaturesVersion string         `json:"signatures_version,omitempty"`
	MalwareFamily     string         `json:"malware_family,omitempty"`
	// Matches are the rules or signatures that matched (the yara plugin's
	// namespace:rule with the meta that decided), as the plugin gave them.
	Matches json.RawMessage `json:"matches,omitempty"`
	// Capped: its malicious answer counted as suspicious (max_verdict).
	Capped bool `json:"capped,omitempty"`
}

// backends lists the plugins that were asked, in the engine's order.
func backends(res engine.Result) []Backend {
	var out []Backend
	for _, p := range res.Plugins {
		if !p.Supported {
			continue
		}
		b := Backend{Name: p.Name, Verdict: p.Verdict, Version: p.Version, VendorVersion: p.VendorVersion,
			SignaturesVersion: p.SignaturesVersion, Matches: p.Matches, Capped: p.Capped}
		if p.Verdict == shared.VerdictMalicious {
			b.MalwareFamily = p.MalwareFamily
		}
		out = append(out, b)
	}
	return out
}

// ScannerInfo describes what produced the verdict.
type ScannerInfo struct {
	// Version is the host's version as ScanMetadata accepts it: dotted
	// numbers only. VersionFull is the whole string ("1.0.0-rc1").
	Version     string `json:"version"`
	VersionFull string `json:"version_full,omitempty"`
	// VendorVersion and SignaturesVersion are the backend's own strings
	// when one backend judged the artifact (the one whose verdict was
	// given); otherwise the plugins' joined, "clamav:1.4.6;eicar:1.0.0",
	// so a verdict can be traced to the exact backends that gave it.
	VendorVersion     string      `json:"vendor_version"`
	SignaturesVersion string      `json:"signatures_version"`
	Environment       Environment `json:"environment"`
}

// Environment is where the host runs.
type Environment struct {
	OperatingSystem string `json:"operating_system"`
	Architecture    string `json:"architecture"`
}

// leadingVersion is the part of a version string ScanMetadata accepts:
// its pattern is ^[0-9]+(\.[0-9]+)*$ (polyswarm-artifact's older schema
// asked for exactly three numbers).
var leadingVersion = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*`)

// metadataVersion is v as both of ScanMetadata's patterns accept it: its
// leading numbers, three of them ("1.0.0-rc1" → "1.0.0", "2" → "2.0.0",
// "dev" → "0.0.0"), and the whole string when that differs.
func metadataVersion(v string) (version, full string) {
	parts := strings.Split(leadingVersion.FindString(strings.TrimPrefix(strings.TrimSpace(v), "v")), ".")
	for len(parts) < 3 {
		parts = append(parts, "0")
	}
	for i, p := range parts {
		if p == "" {
			parts[i] = "0"
		}
	}
	version = strings.Join(parts[:3], ".")
	if version != v {
		full = v
	}
	return version, full
}

// Bounds on comments: they are for people reading the marketplace, and a
// bounty's remarks quote what it sent.
const (
	maxComments      = 8
	maxCommentLength = 200
)

// newMetadata builds an answer's metadata from a composed result. Only the
// plugins that were asked (that support the artifact type) are named.
func newMetadata(hostVersion string, b Bounty, res engine.Result) Metadata {
	family := ""
	if res.Verdict == shared.VerdictMalicious {
		family = res.MalwareFamily
	}
	version, full := metadataVersion(hostVersion)
	vendor, sigs := backendVersions(res)
	return Metadata{
		MalwareFamily: family,
		Product:       Product,
		Heuristic:     res.Heuristic,
		Confidence:    shared.ClampConfidence(res.Confidence),
		Scanner: ScannerInfo{
			Version:           version,
			VersionFull:       full,
			VendorVersion:     vendor,
			SignaturesVersion: sigs,
			Environment:       Environment{OperatingSystem: runtime.GOOS, Architecture: runtime.GOARCH},
		},
		Comments: comments(b, res),
		Backends: backends(res),
	}
}

// backendVersions names the backends behind the verdict. When exactly one
// plugin gave the verdict (the only one asked, or the one that found
// malware) its own strings are sent as they are; otherwise every plugin
// asked is named, "name:version;…". A plugin without a backend (eicar)
// has no vendor version: its own version stands for it.
func backendVersions(res engine.Result) (vendor, sigs string) {
	var asked, judged []engine.PluginResult
	for _, p := range res.Plugins {
		if p.Supported {
			asked = append(asked, p)
			if p.Verdict == res.Verdict {
				judged = append(judged, p)
			}
		}
	}
	if len(judged) == 1 && res.Verdict != shared.VerdictUnknown {
		p := judged[0]
		return firstNonEmpty(p.VendorVersion, p.Version), p.SignaturesVersion
	}
	var vs, ss []string
	for _, p := range asked {
		if v := firstNonEmpty(p.VendorVersion, p.Version); v != "" {
			vs = append(vs, p.Name+":"+v)
		}
		if p.SignaturesVersion != "" {
			ss = append(ss, p.Name+":"+p.SignaturesVersion)
		}
	}
	sort.Strings(vs)
	sort.Strings(ss)
	return strings.Join(vs, ";"), strings.Join(ss, ";")
}

// standardComments are the comments a plugin may give; anything else it
// says stays in the record's reason.
var standardComments = []string{
	shared.CommentTypeUnsupported, shared.CommentCannotFetch,
	shared.CommentEncrypted, shared.CommentDecompressionUnsafe,
}

// comments are the answer's: the standard reasons of an unknown, then
// what was assumed to accept the bounty.
func comments(b Bounty, res engine.Result) []string {
	var out []string
	if res.Verdict == shared.VerdictUnknown {
		for _, c := range res.Comments {
			if slices.Contains(standardComments, c) && !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	for _, r := range b.Remarks {
		if len(out) == maxComments {
			break
		}
		out = append(out, truncate(r, maxCommentLength))
	}
	return out
}

// skippedResult is an unknown the host decides itself, with its standard
// comment.
func skippedResult(comment string, format string, args ...any) engine.Result {
	r := unknownResult(format, args...)
	r.Comments = []string{comment}
	return r
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
