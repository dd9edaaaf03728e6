package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/microengine/microengine/host/verdictcache"
	"github.com/microengine/microengine/shared"
)

// BenchmarkScanSmallFile is the engine's own share of a small file's scan
// with the verdict cache on, as `scan` runs it: a miss, a plugin that
// answers at once, the verdict kept.
func BenchmarkScanSmallFile(b *testing.B) {
	benign := func(context.Context, shared.Artifact) (shared.Result, error) {
		return shared.Result{Verdict: shared.VerdictBenign, Confidence: 1}, nil
	}
	w := 0.8
	ps := policyPlugins{
		plugins: plugins{fakePlugin{name: "clamav", types: []shared.ArtifactType{shared.ArtifactFile}, timeout: time.Minute, scan: benign}},
		policy:  Policy{MaliciousQuorum: 1, Plugins: map[string]PluginPolicy{"clamav": {Weight: &w}}},
	}
	cache := verdictcache.New(verdictcache.Config{TTL: time.Hour, MaxEntries: 1 << 20}, "", nil)
	e := New(ps).WithCache(cache, true)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		path := fmt.Sprintf("/data/files/f%05d", i)
		res := e.Scan(context.Background(), Artifact{
			ID: path, Type: shared.ArtifactFile, Size: 4096, SHA256: fmt.Sprintf("%064x", i),
			Metadata: map[string]string{"filename": path[12:], "filepath": path},
		})
		if res.Verdict != shared.VerdictBenign {
			b.Fatal(res.Reason)
		}
	}
}
