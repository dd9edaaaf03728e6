// Package engine fans one artifact out to every enabled scanner plugin and
// composes their answers into one verdict.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/microengine/microengine/host/verdictcache"
	"github.com/microengine/microengine/shared"
)

// Plugin is one running scanner plugin as the engine sees it. The plugin
// manager provides them; a swap replaces what stands behind a Plugin without
// the engine noticing.
type Plugin interface {
	Name() string
	// Info is the plugin's last known description (versions, types).
	Info() shared.Info
	// Timeout bounds each scan.
	Timeout() time.Duration
	Scan(ctx context.Context, a shared.Artifact) (shared.Result, error)
}

// Plugins lists the enabled plugins at the moment of a scan.
type Plugins interface {
	Plugins() []Plugin
}

// Artifact is the engine's input. Content is an io.ReaderAt so each plugin
// reads its own section concurrently: nothing is held whole in memory.
// When Content is an *os.File (a regular file holding exactly Size bytes),
// plugins that take artifacts by reference get a read-only descriptor of
// it instead of a stream.
type Artifact struct {
	ID       string
	Type     shared.ArtifactType
	Size     int64
	Content  io.ReaderAt
	Metadata map[string]string
	// SHA256 of the content (lowercase hex) when known, "" when not.
	SHA256 string
	// OwnFile says Content is a file the caller opened read-only for this
	// scan alone and reads only by offset (ReadAt): one plugin may then be
	// handed that very descriptor (shared.Artifact.FileExclusive), and
	// the others a new one each, so each still has an offset of its own.
	OwnFile bool
}

// PluginResult is one plugin's answer, kept for the output, the audit trail
// and the metadata sent to the marketplace.
type PluginResult struct {
	Name              string         `json:"name"`
	Version           string         `json:"version,omitempty"`
	VendorVersion     string         `json:"vendor_version,omitempty"`
	SignaturesVersion string         `json:"signatures_version,omitempty"`
	Verdict           shared.Verdict `json:"verdict"`
	Confidence        float64        `json:"confidence"`
	MalwareFamily     string         `json:"malware_family,omitempty"`
	Heuristic         bool           `json:"heuristic,omitempty"`
	Error             string         `json:"error,omitempty"`
	Reason            string         `json:"reason,omitempty"`
	// Comment is the plugin's standard comment on an unknown verdict
	// (shared.MetaComment), such as SKIPPED:ENCRYPTED.
	Comment string `json:"comment,omitempty"`
	// Matches are the signatures or rules that matched, as the plugin
	// lists them (shared.MetaMatches): a JSON array.
	Matches json.RawMessage `json:"matches,omitempty"`
	// Capped is set when the plugin's max_verdict lowered its malicious
	// answer to suspicious in the composition.
	Capped   bool          `json:"capped,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	// Supported is false when the plugin does not scan this artifact type;
	// such a plugin was not asked and takes no part in the verdict.
	Supported bool `json:"supported"`
	// identity is the plugin's Identity (binary and config), for the
	// verdict cache's key.
	identity string
}

// Result is the composed verdict for one artifact.
type Result struct {
	Verdict       shared.Verdict `json:"verdict"`
	Confidence    float64        `json:"confidence"`
	MalwareFamily string         `json:"malware_family"`
	Heuristic     bool           `json:"heuristic,omitempty"`
	// Reason explains an unknown verdict.
	Reason string `json:"reason,omitempty"`
	// Comments are the standard comments on an unknown verdict
	// (shared.Comment*), each once.
	Comments []string       `json:"comments,omitempty"`
	Plugins  []PluginResult `json:"plugins"`
	// Cached is set when the answer came from the verdict cache: no
	// plugin was asked (their Duration is 0).
	Cached bool `json:"cached,omitempty"`
}

// Engine scans artifacts with every enabled plugin.
type Engine struct {
	plugins Plugins
	// cache, when set, answers artifacts seen before (see WithCache).
	cache       *verdictcache.Cache
	trustSHA256 bool
}

// New returns an engine over the given plugins.
func New(p Plugins) *Engine { return &Engine{plugins: p} }

// Scan asks every enabled plugin that supports the artifact's type, at once,
// each within its own timeout (and ctx), and composes the answers.
func (e *Engine) Scan(ctx context.Context, a Artifact) Result {
	plugins := e.plugins.Plugins()
	// The key the verdict is looked up under is the one it is kept under
	// when the plugins answer with the versions they had: building it
	// (names, versions, policy, a sha256 over them) was a tenth of the
	// host's CPU per small file, done twice.
	pending := e.pending(plugins, a)
	// One policy for the key and the composition (asked once: the plugin
	// manager's is a copy of engine.hcl's).
	pol := e.policy()
	key, keyed := e.pendingKey(pending, a, pol)
	if keyed {
		if res, ok := e.cachedFrom(pending, a, key); ok {
			return res
		}
	}
	res := e.scan(ctx, plugins, slices.Clone(pending), a, pol)
	if keyed && !sameVersions(pending, res.Plugins) {
		key, keyed = verdictcache.NewKey(a.SHA256, e.scanners(res.Plugins, a, pol))
	}
	if keyed {
		e.keep(key, res)
	}
	return res
}

func (e *Engine) scan(ctx context.Context, plugins []Plugin, results []PluginResult, a Artifact, pol Policy) Result {
	var wg sync.WaitGroup
	// The last plugin to ask is asked in this goroutine: with one plugin
	// (or one that scans this type) no goroutine is started per artifact.
	// The first may get the caller's own descriptor (OwnFile).
	last, own := -1, a.OwnFile
	for i := range plugins {
		if !results[i].Supported {
			continue
		}
		if last >= 0 {
			wg.Add(1)
			go func(i int, p Plugin, own bool) {
				defer wg.Done()
				scanOne(ctx, p, a, own, &results[i])
			}(last, plugins[last], own)
			own = false
		}
		last = i
	}
	if last >= 0 {
		scanOne(ctx, plugins[last], a, own, &results[last])
	}
	wg.Wait()
	return pol.Compose(results)
}

// policy is the composition policy in force for this scan.
func (e *Engine) policy() Policy {
	if ps, ok := e.plugins.(PolicySource); ok {
		return ps.Policy()
	}
	return Policy{}
}

// scanOne asks p; own: p may be handed Content's own descriptor.
func scanOne(ctx context.Context, p Plugin, a Artifact, own bool, out *PluginResult) {
	start := time.Now()
	if t := p.Timeout(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	sa := shared.Artifact{
		ID: a.ID, Type: a.Type, Size: a.Size, Metadata: a.Metadata, SHA256: a.SHA256,
		Content: io.NewSectionReader(a.Content, 0, a.Size),
	}
	if f, ok := a.Content.(*os.File); ok {
		sa.File, sa.FileExclusive = f, own
	}
	res, err := p.Scan(ctx, sa)
	out.Duration = time.Since(start)
	if err != nil {
		out.Verdict = shared.VerdictUnknown
		out.Error = err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			out.Error = fmt.Sprintf("scan timed out after %s: %v", out.Duration.Round(time.Millisecond), err)
		}
		return
	}
	out.Verdict = res.Verdict
	out.Confidence = res.Confidence
	out.MalwareFamily = res.MalwareFamily
	out.Heuristic = res.Heuristic
	out.Reason = res.Reason
	if v := res.Metadata["signatures_version"]; v != "" {
		out.SignaturesVersion = v
	}
	if v := res.Metadata["vendor_version"]; v != "" {
		out.VendorVersion = v
	}
	if res.Verdict == shared.VerdictUnknown {
		out.Comment = res.Metadata[shared.MetaComment]
	}
	// Matches are passed on only as valid JSON: they are embedded as is
	// in the answer sent to the marketplace.
	if m := res.Metadata[shared.MetaMatches]; m != "" && json.Valid([]byte(m)) {
		out.Matches = json.RawMessage(m)
	}
}
