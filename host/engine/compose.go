package engine

import (
	"fmt"
	"slices"
	"strings"

	"github.com/microengine/microengine/shared"
)

// Policy is how the plugins' answers compose into one verdict (engine.hcl:
// malicious_quorum in the engine block, max_verdict and weight in each
// plugin block). The zero Policy is the default rule.
type Policy struct {
	// MaliciousQuorum is how many plugins must answer malicious for the
	// verdict to be malicious; 0 means 1. Fewer make it suspicious.
	MaliciousQuorum int
	// Plugins holds each plugin's policy by name; a plugin not listed has
	// the default.
	Plugins map[string]PluginPolicy
}

// PluginPolicy is one plugin's part in the composition.
type PluginPolicy struct {
	// MaxVerdict caps what the plugin alone can claim: with
	// VerdictSuspicious its malicious answer counts as suspicious unless
	// a plugin without a cap also answers malicious (then it joins the
	// quorum). Empty or VerdictMalicious: no cap.
	MaxVerdict shared.Verdict
	// Weight scales the plugin's confidence (0–1); nil means 1.
	Weight *float64
}

func (pp PluginPolicy) weight() float64 {
	if pp.Weight == nil {
		return 1
	}
	return shared.ClampConfidence(*pp.Weight)
}

func (pp PluginPolicy) capped() bool { return pp.MaxVerdict == shared.VerdictSuspicious }

// PolicySource is implemented by a Plugins that knows the policy in force
// (the plugin manager, from the engine.hcl it runs): the engine asks it on
// every scan, so a reload of engine.hcl changes the policy with the
// plugins.
type PolicySource interface {
	Policy() Policy
}

// Compose applies the default rule (the zero Policy): any malicious →
// malicious; otherwise benign only when every plugin that supports the
// artifact answered benign (and at least one did); otherwise any
// suspicious → suspicious; otherwise unknown. An unknown or a failure is
// never outvoted into benign.
func Compose(results []PluginResult) Result { return Policy{}.Compose(results) }

// Compose applies the policy to the plugins' answers:
//
//   - malicious when at least MaliciousQuorum plugins answered malicious,
//     one of them without a max_verdict cap (a capped plugin joins the
//     count only beside an uncapped one);
//   - suspicious when some plugin answered malicious short of that, or
//     suspicious;
//   - benign only when every plugin asked answered benign;
//   - unknown otherwise, with every plugin's reason.
//
// Confidence is each plugin's times its weight: the highest malicious one
// (which also names the family), the lowest benign one.
func (p Policy) Compose(results []PluginResult) Result {
	out := Result{Verdict: shared.VerdictUnknown, Plugins: results}
	quorum := max(1, p.MaliciousQuorum)
	var malicious, uncapped, suspicious, benign, asked int
	minBenign := 1.0
	var reasons, comments []string
	var best *PluginResult
	bestConf := 0.0
	for i := range results {
		r := &results[i]
		if !r.Supported {
			continue
		}
		asked++
		pp := p.Plugins[r.Name]
		conf := r.Confidence * pp.weight()
		switch r.Verdict {
		case shared.VerdictMalicious:
			malicious++
			if !pp.capped() {
				uncapped++
			}
			if best == nil || conf > bestConf || (best.MalwareFamily == "" && r.MalwareFamily != "") && conf == bestConf {
				best, bestConf = r, conf
			}
			out.Heuristic = out.Heuristic || r.Heuristic
		case shared.VerdictSuspicious:
			suspicious++
		case shared.VerdictBenign:
			benign++
			minBenign = min(minBenign, conf)
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
	case malicious >= quorum && uncapped > 0:
		out.Verdict = shared.VerdictMalicious
		out.Confidence = bestConf
		out.MalwareFamily = best.MalwareFamily
	case malicious > 0 || suspicious > 0:
		out.Verdict = shared.VerdictSuspicious
		out.Heuristic = false
		if malicious > 0 {
			// Say why a plugin's malicious answer did not carry.
			for i := range results {
				r := &results[i]
				if r.Supported && r.Verdict == shared.VerdictMalicious && p.Plugins[r.Name].capped() {
					r.Capped = true
				}
			}
			if uncapped == 0 {
				out.Reason = "malicious only by plugins capped at suspicious (max_verdict)"
			} else {
				out.Reason = fmt.Sprintf("%d of %d plugins answered malicious; malicious_quorum is %d", malicious, asked, quorum)
			}
		}
	case asked > 0 && benign == asked:
		out.Verdict = shared.VerdictBenign
		out.Confidence = minBenign
	default:
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
