package marketplace

import (
	"math/big"
	"runtime"
	"sort"
	"strings"

	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/shared"
)

// Product names this engine in every answer's metadata.
const Product = "microengine"

// Answer is what is posted to a bounty's response_url: an assertion
// (verdict, bid, metadata) or, in the arbitration phase, a vote (no bid).
type Answer struct {
	Verdict shared.Verdict `json:"verdict"`
	// Bid in wei, a bare JSON integer; nil in a vote.
	Bid      *big.Int `json:"bid,omitempty"`
	Metadata Metadata `json:"metadata"`
}

// Metadata follows polyswarm-artifact's verdict schema.
type Metadata struct {
	// MalwareFamily is required by the schema: "" when there is none.
	MalwareFamily string      `json:"malware_family"`
	Product       string      `json:"product"`
	Heuristic     bool        `json:"heuristic"`
	Scanner       ScannerInfo `json:"scanner"`
}

// ScannerInfo describes what produced the verdict. VendorVersion and
// SignaturesVersion join the plugins' own, "clamav:1.4.6;eicar:1.0.0", so a
// verdict can be traced to the exact backends that gave it.
type ScannerInfo struct {
	Version           string      `json:"version"`
	VendorVersion     string      `json:"vendor_version"`
	SignaturesVersion string      `json:"signatures_version"`
	Environment       Environment `json:"environment"`
}

// Environment is where the host runs.
type Environment struct {
	OperatingSystem string `json:"operating_system"`
	Architecture    string `json:"architecture"`
}

// newMetadata builds an answer's metadata from a composed result. Only the
// plugins that were asked (that support the artifact type) are named.
func newMetadata(hostVersion string, res engine.Result) Metadata {
	var vendor, sigs []string
	for _, p := range res.Plugins {
		if !p.Supported {
			continue
		}
		// A plugin without a backend (eicar) has no vendor version: its own
		// version stands for it.
		if v := firstNonEmpty(p.VendorVersion, p.Version); v != "" {
			vendor = append(vendor, p.Name+":"+v)
		}
		if p.SignaturesVersion != "" {
			sigs = append(sigs, p.Name+":"+p.SignaturesVersion)
		}
	}
	sort.Strings(vendor)
	sort.Strings(sigs)
	family := ""
	if res.Verdict == shared.VerdictMalicious {
		family = res.MalwareFamily
	}
	return Metadata{
		MalwareFamily: family,
		Product:       Product,
		Heuristic:     res.Heuristic,
		Scanner: ScannerInfo{
			Version:           hostVersion,
			VendorVersion:     strings.Join(vendor, ";"),
			SignaturesVersion: strings.Join(sigs, ";"),
			Environment:       Environment{OperatingSystem: runtime.GOOS, Architecture: runtime.GOARCH},
		},
	}
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
