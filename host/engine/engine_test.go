package engine

import (
	"bytes"
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microengine/microengine/shared"
)

func pr(name string, v shared.Verdict, conf float64, family string) PluginResult {
	return PluginResult{Name: name, Verdict: v, Confidence: conf, MalwareFamily: family, Supported: true}
}

func TestCompose(t *testing.T) {
	failed := PluginResult{Name: "clamav", Verdict: shared.VerdictUnknown, Error: "dial clamd: connection refused", Supported: true}
	unsupported := PluginResult{Name: "eicar", Verdict: shared.VerdictUnknown, Reason: "does not scan url artifacts", Supported: false}
	tests := []struct {
		name       string
		in         []PluginResult
		want       shared.Verdict
		family     string
		confidence float64
		reason     string
	}{
		{"all benign", []PluginResult{pr("a", "benign", 1, ""), pr("b", "benign", 0.7, "")}, "benign", "", 0.7, ""},
		{"one malicious wins", []PluginResult{pr("a", "benign", 1, ""), pr("b", "malicious", 0.9, "Win.Trojan")}, "malicious", "Win.Trojan", 0.9, ""},
		{"malicious beats a failure", []PluginResult{failed, pr("b", "malicious", 1, "EICAR")}, "malicious", "EICAR", 1, ""},
		{"a failure is never outvoted into benign", []PluginResult{pr("a", "benign", 1, ""), failed}, "unknown", "", 0, "clamav: dial clamd"},
		{"an unknown is never outvoted into benign", []PluginResult{pr("a", "benign", 1, ""), {Name: "b", Verdict: "unknown", Reason: "size limit", Supported: true}}, "unknown", "", 0, "b: size limit"},
		{"suspicious over benign", []PluginResult{pr("a", "benign", 1, ""), pr("b", "suspicious", 0.5, "")}, "suspicious", "", 0, ""},
		{"suspicious over unknown", []PluginResult{failed, pr("b", "suspicious", 0.5, "")}, "suspicious", "", 0, ""},
		{"unsupported plugins do not vote", []PluginResult{unsupported, pr("b", "benign", 1, "")}, "benign", "", 1, ""},
		{"nobody supports it", []PluginResult{unsupported}, "unknown", "", 0, "no enabled plugin"},
		{"no plugins", nil, "unknown", "", 0, "no enabled plugin"},
		{"most confident malicious names the family", []PluginResult{pr("a", "malicious", 0.6, "Generic"), pr("b", "malicious", 1, "Specific")}, "malicious", "Specific", 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compose(tt.in)
			if got.Verdict != tt.want || got.MalwareFamily != tt.family || got.Confidence != tt.confidence {
				t.Fatalf("Compose = %s/%q/%.2f, want %s/%q/%.2f", got.Verdict, got.MalwareFamily, got.Confidence, tt.want, tt.family, tt.confidence)
			}
			if !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", got.Reason, tt.reason)
			}
		})
	}
}

// fakePlugin stands in for the plugin manager's slot; the real plugins are
// tested through real binaries in host/pluginmgr.
type fakePlugin struct {
	name    string
	types   []shared.ArtifactType
	timeout time.Duration
	scan    func(ctx context.Context, a shared.Artifact) (shared.Result, error)
}

func (f fakePlugin) Name() string { return f.name }
func (f fakePlugin) Info() shared.Info {
	return shared.Info{Name: f.name, Version: "1.0.0", ArtifactTypes: f.types}
}
func (f fakePlugin) Timeout() time.Duration { return f.timeout }
func (f fakePlugin) Scan(ctx context.Context, a shared.Artifact) (shared.Result, error) {
	return f.scan(ctx, a)
}

type plugins []Plugin

func (p plugins) Plugins() []Plugin { return p }

func TestScanFansOutAndTimesOut(t *testing.T) {
	readAll := func(_ context.Context, a shared.Artifact) (shared.Result, error) {
		b, err := io.ReadAll(a.Content)
		if err != nil {
			return shared.Result{}, err
		}
		if !bytes.Equal(b, []byte("content")) {
			return shared.Unknown("got %q", b), nil
		}
		return shared.Result{Verdict: shared.VerdictBenign, Confidence: 1}, nil
	}
	hang := func(ctx context.Context, _ shared.Artifact) (shared.Result, error) {
		<-ctx.Done()
		return shared.Result{}, ctx.Err()
	}
	files := []shared.ArtifactType{shared.ArtifactFile}
	eng := New(plugins{
		fakePlugin{name: "a", types: files, scan: readAll},
		fakePlugin{name: "b", types: files, scan: readAll},
		fakePlugin{name: "slow", types: files, timeout: 50 * time.Millisecond, scan: hang},
		fakePlugin{name: "urls", types: []shared.ArtifactType{shared.ArtifactURL}, scan: hang},
	})
	// The slow plugin never answers by itself: the scan returns only
	// through its 50 ms timeout. Waited for 10 s, not bounded at 2 s (a
	// bound a loaded machine could pass; without the timeout the scan
	// does not return at all).
	done := make(chan Result, 1)
	go func() {
		done <- eng.Scan(context.Background(), Artifact{ID: "x", Type: shared.ArtifactFile, Size: 7, Content: strings.NewReader("content")})
	}()
	var res Result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the scan did not return within 10s: the per-plugin timeout was not applied")
	}
	if res.Verdict != shared.VerdictUnknown || !strings.Contains(res.Reason, "slow: scan timed out") {
		t.Fatalf("verdict %s reason %q; want unknown because slow timed out", res.Verdict, res.Reason)
	}
	for _, p := range res.Plugins[:2] {
		if p.Verdict != shared.VerdictBenign {
			t.Errorf("plugin %s: %s (%s); each plugin must read the whole content", p.Name, p.Verdict, p.Reason)
		}
	}
	if res.Plugins[3].Supported {
		t.Error("a url-only plugin was asked about a file")
	}
}

// TestComposeComments: an unknown carries the standard comments of the
// plugins that could not judge, each once; a verdict carries none.
func TestComposeComments(t *testing.T) {
	enc := PluginResult{Name: "a", Verdict: shared.VerdictUnknown, Comment: shared.CommentEncrypted, Supported: true}
	enc2 := PluginResult{Name: "b", Verdict: shared.VerdictUnknown, Comment: shared.CommentEncrypted, Supported: true}
	if got := Compose([]PluginResult{enc, enc2}); !slices.Equal(got.Comments, []string{shared.CommentEncrypted}) {
		t.Errorf("comments %q", got.Comments)
	}
	if got := Compose([]PluginResult{enc, pr("m", "malicious", 1, "X")}); got.Comments != nil {
		t.Errorf("a malicious verdict with comments %q", got.Comments)
	}
	if got := Compose([]PluginResult{{Name: "u", Supported: false}}); !slices.Equal(got.Comments, []string{shared.CommentTypeUnsupported}) {
		t.Errorf("nobody supports it: comments %q", got.Comments)
	}
}

// TestScanCarriesThePluginComment: the comment crosses from the plugin's
// result metadata, on an unknown only.
func TestScanCarriesThePluginComment(t *testing.T) {
	p := fakePlugin{name: "x", types: []shared.ArtifactType{shared.ArtifactFile}, scan: func(context.Context, shared.Artifact) (shared.Result, error) {
		r := shared.Unknown("encrypted")
		r.Metadata = map[string]string{shared.MetaComment: shared.CommentEncrypted}
		return r, nil
	}}
	res := New(plugins{p}).Scan(context.Background(), Artifact{Type: shared.ArtifactFile, Content: strings.NewReader("")})
	if res.Verdict != shared.VerdictUnknown || !slices.Equal(res.Comments, []string{shared.CommentEncrypted}) {
		t.Errorf("result %+v", res)
	}
}

// TestPolicyCompose: max_verdict caps what a plugin alone can claim,
// weight scales its confidence, malicious_quorum counts malicious answers.
func TestPolicyCompose(t *testing.T) {
	half := 0.5
	hunting := Policy{Plugins: map[string]PluginPolicy{"hunt": {MaxVerdict: shared.VerdictSuspicious, Weight: &half}}}
	quorum2 := Policy{MaliciousQuorum: 2}
	tests := []struct {
		name       string
		policy     Policy
		in         []PluginResult
		want       shared.Verdict
		family     string
		confidence float64
		reason     string
	}{
		{"the zero policy is the default rule", Policy{}, []PluginResult{pr("a", "benign", 1, ""), pr("b", "malicious", 0.9, "X")}, "malicious", "X", 0.9, ""},
		{"a capped plugin alone is suspicious", hunting, []PluginResult{pr("clamav", "benign", 1, ""), pr("hunt", "malicious", 1, "Hunt")}, "suspicious", "", 0, "capped at suspicious"},
		{"a capped plugin beside an uncapped malicious", hunting, []PluginResult{pr("clamav", "malicious", 0.8, "Virus"), pr("hunt", "malicious", 1, "Hunt")}, "malicious", "Virus", 0.8, ""},
		{"weight scales benign confidence", hunting, []PluginResult{pr("clamav", "benign", 1, ""), pr("hunt", "benign", 1, "")}, "benign", "", 0.5, ""},
		{"quorum not met is suspicious", quorum2, []PluginResult{pr("a", "benign", 1, ""), pr("b", "malicious", 1, "X")}, "suspicious", "", 0, "1 of 2 plugins answered malicious; malicious_quorum is 2"},
		{"quorum met", quorum2, []PluginResult{pr("a", "malicious", 0.7, "A"), pr("b", "malicious", 1, "B")}, "malicious", "B", 1, ""},
		{"quorum counts capped plugins beside an uncapped one",
			Policy{MaliciousQuorum: 2, Plugins: hunting.Plugins}, []PluginResult{pr("a", "malicious", 0.7, "A"), pr("hunt", "malicious", 1, "H")}, "malicious", "A", 0.7, ""},
		{"a failure still blocks benign", quorum2, []PluginResult{pr("a", "benign", 1, ""), {Name: "b", Verdict: "unknown", Error: "down", Supported: true}}, "unknown", "", 0, "b: down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.policy.Compose(tt.in)
			if got.Verdict != tt.want || got.MalwareFamily != tt.family || got.Confidence != tt.confidence {
				t.Fatalf("Compose = %s/%q/%.2f, want %s/%q/%.2f", got.Verdict, got.MalwareFamily, got.Confidence, tt.want, tt.family, tt.confidence)
			}
			if !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", got.Reason, tt.reason)
			}
		})
	}
	got := hunting.Compose([]PluginResult{pr("clamav", "benign", 1, ""), pr("hunt", "malicious", 1, "Hunt")})
	if !got.Plugins[1].Capped || got.Plugins[1].Verdict != shared.VerdictMalicious {
		t.Errorf("the capped plugin's own answer %+v; want malicious, marked capped", got.Plugins[1])
	}
}

type policyPlugins struct {
	plugins
	policy Policy
}

func (p policyPlugins) Policy() Policy { return p.policy }

// TestScanUsesThePolicySourceAndPassesMatches: the engine asks its plugins'
// policy on every scan and keeps a plugin's matches (valid JSON only).
func TestScanUsesThePolicySourceAndPassesMatches(t *testing.T) {
	files := []shared.ArtifactType{shared.ArtifactFile}
	answer := func(matches string) func(context.Context, shared.Artifact) (shared.Result, error) {
		return func(context.Context, shared.Artifact) (shared.Result, error) {
			return shared.Result{Verdict: shared.VerdictMalicious, Confidence: 1, MalwareFamily: "F",
				Metadata: map[string]string{shared.MetaMatches: matches}}, nil
		}
	}
	ps := policyPlugins{plugins: plugins{
		fakePlugin{name: "y", types: files, scan: answer(`[{"rule":"ns:r"}]`)},
		fakePlugin{name: "bad", types: files, scan: answer(`[{"rule":`)},
	}, policy: Policy{MaliciousQuorum: 3}}
	res := New(ps).Scan(context.Background(), Artifact{Type: shared.ArtifactFile, Size: 1, Content: strings.NewReader("x")})
	if res.Verdict != shared.VerdictSuspicious {
		t.Errorf("quorum 3 of 2 malicious plugins: %s; want suspicious", res.Verdict)
	}
	if string(res.Plugins[0].Matches) != `[{"rule":"ns:r"}]` || res.Plugins[1].Matches != nil {
		t.Errorf("matches %s and %s; want the valid list kept and the broken one dropped", res.Plugins[0].Matches, res.Plugins[1].Matches)
	}
}

// A file the caller owns (OwnFile) goes as it is to one plugin of the
// artifact at most: plugins handed the same descriptor would share its
// offset. Every plugin still gets the file.
func TestScanOwnFileGoesToOnePlugin(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "artifact")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("content"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	exclusive, files := 0, 0
	scan := func(_ context.Context, a shared.Artifact) (shared.Result, error) {
		mu.Lock()
		defer mu.Unlock()
		if a.File == f {
			files++
		}
		if a.FileExclusive {
			exclusive++
		}
		return shared.Result{Verdict: shared.VerdictBenign, Confidence: 1}, nil
	}
	var ps plugins
	for _, name := range []string{"a", "b", "c"} {
		ps = append(ps, fakePlugin{name: name, types: []shared.ArtifactType{shared.ArtifactFile}, scan: scan})
	}
	for _, own := range []bool{true, false} {
		exclusive, files = 0, 0
		res := New(ps).Scan(context.Background(), Artifact{ID: "x", Type: shared.ArtifactFile, Size: 7, Content: f, OwnFile: own})
		if res.Verdict != shared.VerdictBenign {
			t.Fatalf("verdict %s: %s", res.Verdict, res.Reason)
		}
		want := 0
		if own {
			want = 1
		}
		if files != 3 || exclusive != want {
			t.Fatalf("OwnFile %v: %d plugins got the file and %d its own descriptor, want 3 and %d", own, files, exclusive, want)
		}
	}
}
