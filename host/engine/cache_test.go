package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microengine/microengine/host/verdictcache"
	"github.com/microengine/microengine/shared"
)

// versionedPlugin reports signature versions that a test changes, and
// counts its scans.
type versionedPlugin struct {
	fakePlugin
	sigs  *atomic.Value
	scans *atomic.Int32
}

func (v versionedPlugin) Info() shared.Info {
	i := v.fakePlugin.Info()
	i.SignaturesVersion = v.sigs.Load().(string)
	return i
}

func (v versionedPlugin) Scan(ctx context.Context, a shared.Artifact) (shared.Result, error) {
	v.scans.Add(1)
	return v.fakePlugin.Scan(ctx, a)
}

func TestCachedVerdicts(t *testing.T) {
	var sigs atomic.Value
	sigs.Store("100")
	var scans atomic.Int32
	verdict := shared.Result{Verdict: shared.VerdictMalicious, Confidence: 1, MalwareFamily: "Eicar"}
	p := versionedPlugin{fakePlugin: fakePlugin{name: "clamav", types: []shared.ArtifactType{shared.ArtifactFile}, scan: func(context.Context, shared.Artifact) (shared.Result, error) {
		return verdict, nil
	}}, sigs: &sigs, scans: &scans}
	cache := verdictcache.New(verdictcache.Config{TTL: time.Hour, MaxEntries: 100}, "", nil)
	eng := New(plugins{p}).WithCache(cache, true)
	sha := strings.Repeat("ab", 32)
	art := Artifact{ID: "x", Type: shared.ArtifactFile, Size: 7, Content: strings.NewReader("content"), SHA256: sha}
	scan := func() Result {
		t.Helper()
		return eng.Scan(context.Background(), art)
	}

	if r := scan(); r.Cached || r.Verdict != shared.VerdictMalicious || scans.Load() != 1 {
		t.Fatalf("first scan: %+v after %d scans", r, scans.Load())
	}
	r := scan()
	if !r.Cached || r.Verdict != shared.VerdictMalicious || r.MalwareFamily != "Eicar" || scans.Load() != 1 {
		t.Fatalf("second scan: %+v after %d scans; want it from the cache", r, scans.Load())
	}
	if len(r.Plugins) != 1 || r.Plugins[0].Name != "clamav" || r.Plugins[0].SignaturesVersion != "100" || r.Plugins[0].Verdict != shared.VerdictMalicious {
		t.Fatalf("cached plugin results %+v", r.Plugins)
	}
	if r, ok := eng.CachedBeforeFetch(Artifact{Type: shared.ArtifactFile, Size: -1, SHA256: sha}); !ok || !r.Cached {
		t.Fatalf("by the announced sha256: %+v %v", r, ok)
	}
	if _, ok := New(plugins{p}).WithCache(cache, false).CachedBeforeFetch(Artifact{Type: shared.ArtifactFile, SHA256: sha}); ok {
		t.Fatal("answered before the fetch with trust_bounty_sha256 off")
	}

	// A signature reload changes the key: scanned again.
	sigs.Store("101")
	if r := scan(); r.Cached || scans.Load() != 2 {
		t.Fatalf("after a reload: %+v after %d scans", r, scans.Load())
	}
	// Unknown is never kept.
	verdict = shared.Unknown("clamd down")
	sigs.Store("102")
	scan()
	if r := scan(); r.Cached || scans.Load() != 4 {
		t.Fatalf("an unknown was served from the cache: %+v after %d scans", r, scans.Load())
	}
	// No sha256, or a URL: not cached.
	noSHA := art
	noSHA.SHA256 = ""
	if _, ok := eng.pendingKey(eng.pending(plugins{p}, noSHA), noSHA, eng.policy()); ok {
		t.Error("a key without a sha256")
	}
}

type identifiedPlugin struct {
	versionedPlugin
	id *atomic.Value
}

func (p identifiedPlugin) Identity() string { return p.id.Load().(string) }

// A plugin whose binary or config changed (its Identity) is asked again,
// even with the same versions.
func TestCacheKeyHasThePluginsIdentity(t *testing.T) {
	var sigs, id atomic.Value
	sigs.Store("1")
	id.Store("binary-a:config-a")
	var scans atomic.Int32
	p := identifiedPlugin{versionedPlugin{fakePlugin: fakePlugin{name: "p", types: []shared.ArtifactType{shared.ArtifactFile}, scan: func(context.Context, shared.Artifact) (shared.Result, error) {
		return shared.Result{Verdict: shared.VerdictBenign, Confidence: 1}, nil
	}}, sigs: &sigs, scans: &scans}, &id}
	eng := New(plugins{p}).WithCache(verdictcache.New(verdictcache.Config{TTL: time.Hour, MaxEntries: 10}, "", nil), true)
	art := Artifact{ID: "x", Type: shared.ArtifactFile, Size: 1, Content: strings.NewReader("x"), SHA256: strings.Repeat("cd", 32)}
	eng.Scan(context.Background(), art)
	if r := eng.Scan(context.Background(), art); !r.Cached {
		t.Fatal("the same plugin was not answered from the cache")
	}
	id.Store("binary-a:config-b")
	if r := eng.Scan(context.Background(), art); r.Cached || scans.Load() != 2 {
		t.Fatalf("a changed config was answered from the cache: %+v", r)
	}
}

// A verdict that depends on the artifact's name (YARA rules test filename
// and filepath: signature-base's VULN_Linux_NFS_Exports wants
// filename == "exports" and a filepath under /etc) is cached per name: the
// same bytes under another name are scanned again. A bounty's other
// fields (its id) stay out of the key.
func TestCacheKeyHasTheArtifactsName(t *testing.T) {
	var sigs atomic.Value
	sigs.Store("1")
	var scans atomic.Int32
	p := versionedPlugin{fakePlugin: fakePlugin{name: "yara", types: []shared.ArtifactType{shared.ArtifactFile}, scan: func(_ context.Context, a shared.Artifact) (shared.Result, error) {
		if a.Metadata["filename"] == "exports" && strings.HasPrefix(a.Metadata["filepath"], "/etc/") {
			return shared.Result{Verdict: shared.VerdictMalicious, Confidence: 1, MalwareFamily: "VULN_Linux_NFS_Exports"}, nil
		}
		return shared.Result{Verdict: shared.VerdictBenign, Confidence: 1}, nil
	}}, sigs: &sigs, scans: &scans}
	eng := New(plugins{p}).WithCache(verdictcache.New(verdictcache.Config{TTL: time.Hour, MaxEntries: 10}, "", nil), true)
	sha := strings.Repeat("ef", 32)
	scan := func(meta map[string]string) Result {
		t.Helper()
		return eng.Scan(context.Background(), Artifact{ID: "x", Type: shared.ArtifactFile, Size: 1, Content: strings.NewReader("x"), SHA256: sha, Metadata: meta})
	}
	backup := map[string]string{"filename": "exports", "filepath": "/home/u/backup/exports", "id": "1"}
	if r := scan(backup); r.Verdict != shared.VerdictBenign || r.Cached {
		t.Fatalf("first scan: %+v", r)
	}
	if r := scan(map[string]string{"filename": "exports", "filepath": "/home/u/backup/exports", "id": "2"}); !r.Cached || scans.Load() != 1 {
		t.Fatalf("the same name in another bounty was not answered from the cache: %+v", r)
	}
	if r := scan(map[string]string{"filename": "exports", "filepath": "/etc/exports", "id": "3"}); r.Cached || r.Verdict != shared.VerdictMalicious {
		t.Fatalf("the same bytes as /etc/exports: %s (cached %v); want malicious, scanned", r.Verdict, r.Cached)
	}
	if r, ok := eng.CachedBeforeFetch(Artifact{Type: shared.ArtifactFile, Size: -1, SHA256: sha, Metadata: map[string]string{"filename": "exports", "filepath": "/etc/exports"}}); !ok || r.Verdict != shared.VerdictMalicious {
		t.Fatalf("by the announced sha256 and name: %+v %v; want the malicious verdict", r, ok)
	}
	if r := scan(nil); r.Cached || scans.Load() != 3 {
		t.Fatalf("no name was answered from a named artifact's entry: %+v", r)
	}
}

// reloadedPolicy gives a new Policy on every call, as the plugin manager
// does from each engine.hcl it loads: the weight is a new pointer each time.
type reloadedPolicy struct {
	plugins
	weight *atomic.Value // float64
}

func (r reloadedPolicy) Policy() Policy {
	w := r.weight.Load().(float64)
	return Policy{Plugins: map[string]PluginPolicy{"clamav": {Weight: &w}}}
}

// The cache keys on the policy's values: the same weight read again keeps
// the cached verdict, a changed weight scans again.
func TestCacheKeysOnThePolicysValues(t *testing.T) {
	var weight atomic.Value
	weight.Store(0.5)
	var scans atomic.Int32
	var sigs atomic.Value
	sigs.Store("100")
	p := versionedPlugin{fakePlugin: fakePlugin{name: "clamav", types: []shared.ArtifactType{shared.ArtifactFile}, scan: func(context.Context, shared.Artifact) (shared.Result, error) {
		return shared.Result{Verdict: shared.VerdictMalicious, Confidence: 1}, nil
	}}, sigs: &sigs, scans: &scans}
	cache := verdictcache.New(verdictcache.Config{TTL: time.Hour, MaxEntries: 100}, "", nil)
	eng := New(reloadedPolicy{plugins: plugins{p}, weight: &weight}).WithCache(cache, true)
	art := Artifact{ID: "x", Type: shared.ArtifactFile, Size: 7, Content: strings.NewReader("content"), SHA256: strings.Repeat("cd", 32)}

	eng.Scan(context.Background(), art)
	if r := eng.Scan(context.Background(), art); !r.Cached || scans.Load() != 1 {
		t.Fatalf("the same weight, reloaded: %+v after %d scans; want it from the cache", r, scans.Load())
	}
	weight.Store(0.25)
	if r := eng.Scan(context.Background(), art); r.Cached || scans.Load() != 2 || r.Confidence != 0.25 {
		t.Fatalf("a changed weight: %+v after %d scans; want a new scan at confidence 0.25", r, scans.Load())
	}
}

// A plugin whose signatures were reloaded during the scan answers with
// the new version: the verdict is kept under that one, not under the
// version it had when the scan was looked up.
func TestCacheKeepsUnderTheVersionsOfTheAnswer(t *testing.T) {
	var sigs atomic.Value
	sigs.Store("1")
	var scans atomic.Int32
	p := versionedPlugin{fakePlugin: fakePlugin{name: "clamav", types: []shared.ArtifactType{shared.ArtifactFile}, scan: func(context.Context, shared.Artifact) (shared.Result, error) {
		sigs.Store("2") // reloaded while scanning
		return shared.Result{Verdict: shared.VerdictBenign, Confidence: 1, Metadata: map[string]string{"signatures_version": "2"}}, nil
	}}, sigs: &sigs, scans: &scans}
	eng := New(plugins{p}).WithCache(verdictcache.New(verdictcache.Config{TTL: time.Hour, MaxEntries: 100}, "", nil), true)
	art := Artifact{ID: "x", Type: shared.ArtifactFile, Size: 7, Content: strings.NewReader("content"), SHA256: strings.Repeat("cd", 32)}
	if r := eng.Scan(context.Background(), art); r.Cached || r.Plugins[0].SignaturesVersion != "2" {
		t.Fatalf("first scan: %+v", r)
	}
	if r := eng.Scan(context.Background(), art); !r.Cached || scans.Load() != 1 {
		t.Fatalf("with signatures 2: %+v after %d scans; want it from the cache", r, scans.Load())
	}
	sigs.Store("1")
	if r, ok := eng.CachedBeforeFetch(art); ok {
		t.Fatalf("with signatures 1: %+v served from the cache, kept under the version before the reload", r)
	}
}

// referencePolicyKey is policyKey as first written, with fmt: keys must
// not change with how they are computed, or every saved cache misses once
// after an upgrade.
func referencePolicyKey(p Policy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "quorum=%d", p.MaliciousQuorum)
	for _, name := range slices.Sorted(maps.Keys(p.Plugins)) {
		pp := p.Plugins[name]
		fmt.Fprintf(&b, ";%d:%s=%s,%g", len(name), name, pp.MaxVerdict, pp.weight())
	}
	return b.String()
}

func TestKeyPartsKeepTheirBytes(t *testing.T) {
	weights := []float64{0.8, 1, 0, 1e-7, 0.3333333333333333, 2}
	for i, w := range weights {
		p := Policy{MaliciousQuorum: i, Plugins: map[string]PluginPolicy{
			"clamav": {Weight: &w}, "yara": {MaxVerdict: shared.VerdictSuspicious}, "é-plugin": {Weight: &weights[0], MaxVerdict: shared.VerdictMalicious},
		}}
		if got, want := policyKey(p), referencePolicyKey(p); got != want {
			t.Errorf("policyKey %q, want %q", got, want)
		}
	}
	if got, want := policyKey(Policy{}), referencePolicyKey(Policy{}); got != want {
		t.Errorf("policyKey %q, want %q", got, want)
	}
	a := Artifact{Metadata: map[string]string{"filename": "svchost.exe", "filepath": `C:\Windows\Temp\svchost.exe`, "owner": "é", "other": "x"}}
	var want strings.Builder
	for _, k := range KeyedMetadata {
		if v := a.Metadata[k]; v != "" {
			fmt.Fprintf(&want, "%d:%s%d:%s;", len(k), k, len(v), v)
		}
	}
	sc := New(plugins{}).scanners(nil, a, Policy{})
	if len(sc) != 2 || sc[0].Name != "\x00artifact" || sc[0].Version != want.String() {
		t.Fatalf("scanners %+v, want the artifact's part %q", sc, want.String())
	}
}
