package engine

import (
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/microengine/microengine/host/verdictcache"
	"github.com/microengine/microengine/shared"
)

// WithCache makes the engine answer from c what it has seen with the same
// plugins, versions and policy, and keep what it scans. trustSHA256 lets
// CachedBeforeFetch answer by the sha256 a bounty announces, before the
// content is fetched.
func (e *Engine) WithCache(c *verdictcache.Cache, trustSHA256 bool) *Engine {
	e.cache, e.trustSHA256 = c, trustSHA256
	return e
}

// CachedBeforeFetch answers an artifact of which only the announced sha256
// is known, when the cache holds it and trusting announced hashes is on.
func (e *Engine) CachedBeforeFetch(a Artifact) (Result, bool) {
	if e.cache == nil || !e.trustSHA256 {
		return Result{}, false
	}
	pending := e.pending(e.plugins.Plugins(), a)
	key, ok := e.pendingKey(pending, a, e.policy())
	if !ok {
		return Result{}, false
	}
	return e.cachedFrom(pending, a, key)
}

// KeyedMetadata are the artifact metadata a verdict may depend on besides
// the content, so the cache keys on them: the file's name, path, type and
// owner. YARA rules test them (the yara plugin's external variables):
// signature-base flags a system binary's name in the wrong folder, so the
// same bytes are benign as C:\Windows\System32\svchost.exe and malicious
// as ...\Temp\svchost.exe; a cache keyed on the sha256 alone served the
// first verdict for both. A bounty's other fields (its id, expiration,
// URI) differ for every bounty and stay out of the key.
var KeyedMetadata = []string{"filename", "filepath", "filetype", "owner"}

// scanners lists what a key is made of: every plugin that scans a's type,
// with the versions it has reported, the composition policy pol, and a's
// KeyedMetadata. (Written with strconv, not fmt: the key is built for
// every artifact, and fmt was most of its cost.)
func (e *Engine) scanners(results []PluginResult, a Artifact, pol Policy) []verdictcache.Scanner {
	out := make([]verdictcache.Scanner, 0, len(results)+2)
	for _, r := range results {
		if r.Supported {
			out = append(out, verdictcache.Scanner{Name: r.Name, Version: r.Version, VendorVersion: r.VendorVersion,
				SignaturesVersion: r.SignaturesVersion, Identity: r.identity})
		}
	}
	var named []byte
	for _, k := range KeyedMetadata {
		if v := a.Metadata[k]; v != "" {
			// Lengths first, so no two sets of values write alike.
			named = appendLenString(named, k)
			named = appendLenString(named, v)
			named = append(named, ';')
		}
	}
	if len(named) > 0 {
		out = append(out, verdictcache.Scanner{Name: "\x00artifact", Version: string(named)})
	}
	// A policy change (quorum, weights, caps) composes other verdicts.
	return append(out, verdictcache.Scanner{Name: "\x00policy", Version: policyKey(pol)})
}

// appendLenString appends "len:s".
func appendLenString(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

// policyKey writes the values a policy composes with, its plugins in name
// order: "quorum=N", then ";len:name=max_verdict,weight" (the weight as
// %g writes it). (%+v of the Policy printed a weight's pointer, not its
// value: a reload lost every cached verdict, and a changed weight at a
// reused address kept the old key.)
func policyKey(p Policy) string {
	b := make([]byte, 0, 64)
	b = append(b, "quorum="...)
	b = strconv.AppendInt(b, int64(p.MaliciousQuorum), 10)
	for _, name := range slices.Sorted(maps.Keys(p.Plugins)) {
		pp := p.Plugins[name]
		b = append(b, ';')
		b = appendLenString(b, name)
		b = append(b, '=')
		b = append(b, pp.MaxVerdict...)
		b = append(b, ',')
		b = strconv.AppendFloat(b, pp.weight(), 'g', -1, 64)
	}
	return string(b)
}

// pendingKey is the key under which the plugins of pending (e.pending)
// would have stored a's verdict; ok is false when a cannot be cached (no
// cache, no sha256, not a file).
func (e *Engine) pendingKey(pending []PluginResult, a Artifact, pol Policy) (verdictcache.Key, bool) {
	if e.cache == nil || a.Type != shared.ArtifactFile || a.SHA256 == "" {
		return verdictcache.Key{}, false
	}
	return verdictcache.NewKey(a.SHA256, e.scanners(pending, a, pol))
}

// sameVersions reports whether the plugins answered with the versions
// they had before the scan: the key the verdict was looked up under is
// then the one to keep it under.
func sameVersions(pending, answered []PluginResult) bool {
	if len(pending) != len(answered) {
		return false
	}
	for i, p := range pending {
		r := answered[i]
		if p.Supported != r.Supported || p.Name != r.Name || p.Version != r.Version || p.VendorVersion != r.VendorVersion ||
			p.SignaturesVersion != r.SignaturesVersion || p.identity != r.identity {
			return false
		}
	}
	return true
}

// pending is the per-plugin results before any scan: names, versions and
// whether each plugin scans a's type.
func (e *Engine) pending(plugins []Plugin, a Artifact) []PluginResult {
	results := make([]PluginResult, len(plugins))
	for i, p := range plugins {
		info := p.Info()
		results[i] = PluginResult{
			Name: p.Name(), Version: info.Version,
			VendorVersion: info.VendorVersion, SignaturesVersion: info.SignaturesVersion,
			Supported: info.Supports(a.Type), identity: identity(p),
		}
		if !results[i].Supported {
			results[i].Verdict = shared.VerdictUnknown
			results[i].Reason = fmt.Sprintf("does not scan %s artifacts", a.Type)
		}
	}
	return results
}

// cachedFrom answers from the cache, with a copy of pending (e.pending)
// as the per-plugin results.
func (e *Engine) cachedFrom(pending []PluginResult, a Artifact, key verdictcache.Key) (Result, bool) {
	entry, ok := e.cache.Get(key)
	if !ok {
		return Result{}, false
	}
	results := slices.Clone(pending)
	byName := make(map[string]verdictcache.Verdict, len(entry.Plugins))
	for _, v := range entry.Plugins {
		byName[v.Name] = v
	}
	for i := range results {
		if !results[i].Supported {
			continue
		}
		v, ok := byName[results[i].Name]
		if !ok { // cannot happen: the key names the same plugins
			return Result{}, false
		}
		results[i].Verdict, results[i].Confidence = v.Verdict, v.Confidence
		results[i].MalwareFamily, results[i].Heuristic = v.MalwareFamily, v.Heuristic
	}
	return Result{
		Verdict: entry.Verdict, Confidence: entry.Confidence, MalwareFamily: entry.MalwareFamily,
		Heuristic: entry.Heuristic, Plugins: results, Cached: true,
	}, true
}

// keep stores a scanned verdict under key, made of the versions the
// plugins reported with their answers (a plugin that reloaded its
// signatures mid-scan reports the new ones).
func (e *Engine) keep(key verdictcache.Key, res Result) {
	entry := verdictcache.Entry{Verdict: res.Verdict, Confidence: res.Confidence, MalwareFamily: res.MalwareFamily, Heuristic: res.Heuristic}
	for _, r := range res.Plugins {
		if !r.Supported {
			continue
		}
		if r.Error != "" || r.Capped {
			return
		}
		entry.Plugins = append(entry.Plugins, verdictcache.Verdict{Name: r.Name, Verdict: r.Verdict, Confidence: r.Confidence, MalwareFamily: r.MalwareFamily, Heuristic: r.Heuristic})
	}
	e.cache.Put(key, entry) // Put keeps only what is cacheable
}

// Identified is a Plugin that names the binary and config behind its
// verdicts (the plugin manager's do); the cache keys on it.
type Identified interface {
	Identity() string
}

func identity(p Plugin) string {
	if id, ok := p.(Identified); ok {
		return id.Identity()
	}
	return ""
}
