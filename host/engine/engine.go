// Package engine fans one artifact out to every enabled scanner plugin and
// composes their answers into one verdict.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

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
type Artifact struct {
	ID       string
	Type     shared.ArtifactType
	Size     int64
	Content  io.ReaderAt
	Metadata map[string]string
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
	Comment  string        `json:"comment,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	// Supported is false when the plugin does not scan this artifact type;
	// such a plugin was not asked and takes no part in the verdict.
	Supported bool `json:"supported"`
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
}

// Engine scans artifacts with every enabled plugin.
type Engine struct {
	plugins Plugins
}

// New returns an engine over the given plugins.
func New(p Plugins) *Engine { return &Engine{plugins: p} }

// Scan asks every enabled plugin that supports the artifact's type, at once,
// each within its own timeout (and ctx), and composes the answers.
func (e *Engine) Scan(ctx context.Context, a Artifact) Result {
	plugins := e.plugins.Plugins()
	results := make([]PluginResult, len(plugins))
	var wg sync.WaitGroup
	for i, p := range plugins {
		info := p.Info()
		results[i] = PluginResult{
			Name: p.Name(), Version: info.Version,
			VendorVersion: info.VendorVersion, SignaturesVersion: info.SignaturesVersion,
			Supported: info.Supports(a.Type),
		}
		if !results[i].Supported {
			results[i].Verdict = shared.VerdictUnknown
			results[i].Reason = fmt.Sprintf("does not scan %s artifacts", a.Type)
			continue
		}
		wg.Add(1)
		go func(i int, p Plugin) {
			defer wg.Done()
			scanOne(ctx, p, a, &results[i])
		}(i, p)
	}
	wg.Wait()
	return Compose(results)
}

func scanOne(ctx context.Context, p Plugin, a Artifact, out *PluginResult) {
	start := time.Now()
	if t := p.Timeout(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	res, err := p.Scan(ctx, shared.Artifact{
		ID: a.ID, Type: a.Type, Size: a.Size, Metadata: a.Metadata,
		Content: io.NewSectionReader(a.Content, 0, a.Size),
	})
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
}

// Compose applies the verdict rule: any malicious → malicious; otherwise
// benign only when every plugin that supports the artifact answered benign
// (and at least one did); otherwise any suspicious → suspicious; otherwise
// unknown. An unknown or a failure is never outvoted into benign.
func Compose(results []PluginResult) Result {
	out := Result{Verdict: shared.VerdictUnknown, Plugins: results}
	var malicious, suspicious, benign, asked int
	minBenign := 1.0
	var reasons, comments []string
	for _, r := range results {
		if !r.Supported {
			continue
		}
		asked++
		switch r.Verdict {
		case shared.VerdictMalicious:
			if malicious == 0 || r.Confidence > out.Confidence {
				out.Confidence = r.Confidence
				if r.MalwareFamily != "" || out.MalwareFamily == "" {
					out.MalwareFamily = r.MalwareFamily
				}
			}
			out.Heuristic = out.Heuristic || r.Heuristic
			malicious++
		case shared.VerdictSuspicious:
			suspicious++
		case shared.VerdictBenign:
			benign++
			minBenign = min(minBenign, r.Confidence)
		default:
			why := r.Error
			if why == "" {
				why = r.Reason
			}
			if why == "" {
				why = "no verdict"
			}
			reasons = append(reasons, r.Name+": "+why)
			if r.Comment != "" && !slices.Contains(comments, r.Comment) {
				comments = append(comments, r.Comment)
			}
		}
	}
	switch {
	case malicious > 0:
		out.Verdict = shared.VerdictMalicious
	case asked > 0 && benign == asked:
		out.Verdict = shared.VerdictBenign
		out.Confidence = minBenign
	case suspicious > 0:
		out.Verdict = shared.VerdictSuspicious
		out.Confidence = 0
	default:
		out.Confidence = 0
		switch {
		case asked == 0:
			out.Reason = "no enabled plugin scans this artifact type"
			comments = []string{shared.CommentTypeUnsupported}
		case len(reasons) > 0:
			out.Reason = strings.Join(reasons, "; ")
		}
		out.Comments = comments
	}
	return out
}
