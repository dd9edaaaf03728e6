package simulator

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/microengine/microengine/shared"
)

// PluginAgreement is how one backend's own verdicts (the answers'
// metadata.backends) compare with what that backend should say about the
// samples: the expected verdict when the sample's manifest lists it in
// caught_by (or lists no caught_by at all), benign when the sample is
// caught only by others. It shows which backend catches what: a YARA-only
// sample is a miss for clamav, and the composed verdict still right.
type PluginAgreement struct {
	Asked    int `json:"asked"`
	Agree    int `json:"agree"`
	Disagree int `json:"disagree"`
	Unknown  int `json:"unknown"`
	// Misses names up to maxMisses samples it disagreed on.
	Misses []string `json:"misses,omitempty"`
}

const maxMisses = 5

// backendVerdicts reads metadata.backends of an answer: each plugin's own
// verdict. An answer without them yields nil.
func backendVerdicts(raw []byte) map[string]shared.Verdict {
	var a struct {
		Metadata struct {
			Backends []struct {
				Name    string `json:"name"`
				Verdict string `json:"verdict"`
			} `json:"backends"`
		} `json:"metadata"`
	}
	if json.Unmarshal(raw, &a) != nil || len(a.Metadata.Backends) == 0 {
		return nil
	}
	out := make(map[string]shared.Verdict, len(a.Metadata.Backends))
	for _, b := range a.Metadata.Backends {
		v, err := shared.ParseVerdict(b.Verdict)
		if err != nil {
			v = shared.VerdictUnknown
		}
		out[b.Name] = v
	}
	return out
}

// pluginExpected is what plugin should answer about s; ok is false when
// the sample says nothing about single backends (no expected verdict, or
// one the host decides alone, such as a filtered unknown).
func pluginExpected(s *Sample, plugin string) (shared.Verdict, bool) {
	switch s.Expected {
	case shared.VerdictMalicious, shared.VerdictSuspicious, shared.VerdictBenign:
	default:
		return "", false
	}
	if s.CaughtBy == nil || slices.Contains(s.CaughtBy, plugin) {
		return s.Expected, true
	}
	return shared.VerdictBenign, true
}

// agree adds one answered bounty's backends to the tally.
func agree(tally map[string]*PluginAgreement, s *Sample, backends map[string]shared.Verdict) {
	for name, v := range backends {
		want, ok := pluginExpected(s, name)
		if !ok {
			continue
		}
		a := tally[name]
		if a == nil {
			a = &PluginAgreement{}
			tally[name] = a
		}
		a.Asked++
		switch {
		case v == want:
			a.Agree++
		case v == shared.VerdictUnknown:
			a.Unknown++
		default:
			a.Disagree++
			// A sample sent again is listed once: the entries are
			// "name (verdict, want verdict)".
			listed := slices.ContainsFunc(a.Misses, func(m string) bool { return strings.HasPrefix(m, s.Name+" (") })
			if len(a.Misses) < maxMisses && !listed {
				a.Misses = append(a.Misses, fmt.Sprintf("%s (%s, want %s)", s.Name, v, want))
			}
		}
	}
}

// writePlugins prints the per-plugin line of the scoreboard.
func writePlugins(w io.Writer, plugins map[string]PluginAgreement) {
	if len(plugins) == 0 {
		return
	}
	names := make([]string, 0, len(plugins))
	for n := range plugins {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		a := plugins[n]
		p := fmt.Sprintf("%s agrees %d/%d", n, a.Agree, a.Asked)
		if a.Unknown > 0 {
			p += fmt.Sprintf(" (unknown %d)", a.Unknown)
		}
		parts = append(parts, p)
	}
	fmt.Fprintf(w, "plugins   %s  (each backend's own verdict against what it should catch)\n", strings.Join(parts, "  "))
	for _, n := range names {
		if m := plugins[n].Misses; len(m) > 0 {
			fmt.Fprintf(w, "          %s disagrees on %s\n", n, strings.Join(m, ", "))
		}
	}
}
