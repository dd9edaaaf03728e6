package scanner

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/hillu/go-yara/v4"

	"github.com/microengine/microengine/shared"
)

// Class is what one matching rule says about an artifact.
type Class string

const (
	ClassMalicious  Class = "malicious"
	ClassSuspicious Class = "suspicious"
	// ClassInformational matches are reported but never decide: hunting
	// rules, file-type rules, "this is a PE packed with UPX".
	ClassInformational Class = "informational"
)

// Match is one matching rule as reported in a result's metadata.
type Match struct {
	// Rule is "namespace:identifier".
	Rule   string `json:"rule"`
	Class  Class  `json:"class"`
	Family string `json:"family,omitempty"`
	// Meta holds the meta values that decided the class and family.
	Meta map[string]any `json:"meta,omitempty"`
	Tags []string       `json:"tags,omitempty"`
	// score is the rule's score, -1 when it has none.
	score int
}

// Mapping turns matching rules into a verdict. Its fields are the
// plugin's config settings of the same names.
type Mapping struct {
	// FamilyMeta are the meta keys read, in order, for the malware
	// family; the rule's name is the family when none is set.
	FamilyMeta []string
	// ScoreMeta are the meta keys read, in order, for a rule's score
	// (0–100): "score" in signature-base, "severity" in Elastic's rules.
	ScoreMeta []string
	// MaliciousScore and SuspiciousScore bound the score (0–100):
	// at or above MaliciousScore malicious, at or above SuspiciousScore
	// suspicious, below informational.
	MaliciousScore  int
	SuspiciousScore int
	// Informational are tags and meta "category" values (any case) that
	// make a match informational whatever its score.
	Informational []string
}

// DefaultMapping follows what public rule collections write: a score meta
// in 0–100 (signature-base, Assemblyline's threat levels map onto it),
// family or malware_family metas, and info/hunting categories and tags.
func DefaultMapping() Mapping {
	return Mapping{
		FamilyMeta:      []string{"malware_family", "family", "malware"},
		ScoreMeta:       []string{"score"},
		MaliciousScore:  75,
		SuspiciousScore: 40,
		Informational:   []string{"info", "informational", "hunting"},
	}
}

// classify maps one matching rule.
func (m Mapping) classify(r *yara.Rule) Match {
	metas := map[string]any{}
	for _, mt := range r.Metas() {
		// The first value of a repeated meta wins, as yara -m prints it.
		if _, dup := metas[mt.Identifier]; !dup {
			metas[mt.Identifier] = mt.Value
		}
	}
	out := Match{Rule: r.Namespace() + ":" + r.Identifier(), Meta: map[string]any{}, Tags: r.Tags(), score: -1}
	out.Family = r.Identifier()
	for _, k := range m.FamilyMeta {
		if s, ok := metas[k].(string); ok && strings.TrimSpace(s) != "" {
			out.Family = strings.TrimSpace(s)
			out.Meta[k] = s
			break
		}
	}
	for _, t := range out.Tags {
		if m.isInformational(t) {
			out.Class = ClassInformational
			return out
		}
	}
	if c, ok := metas["category"].(string); ok && m.isInformational(c) {
		out.Meta["category"] = c
		out.Class = ClassInformational
		return out
	}
	for _, k := range m.ScoreMeta {
		v, present := metas[k]
		if !present {
			continue
		}
		out.Meta[k] = v
		score, ok := scoreOf(v)
		switch {
		case !ok:
			// A score that is no number in 0–100 cannot rank the match:
			// it is reported, not trusted to decide.
			out.Class = ClassInformational
		case score >= m.MaliciousScore:
			out.Class = ClassMalicious
		case score >= m.SuspiciousScore:
			out.Class = ClassSuspicious
		default:
			out.Class = ClassInformational
		}
		out.score = score
		return out
	}
	// A rule with nothing to say otherwise is a detection: that is what
	// a rule in a malware rule set is written for.
	out.Class = ClassMalicious
	return out
}

func (m Mapping) isInformational(s string) bool {
	for _, x := range m.Informational {
		if strings.EqualFold(strings.TrimSpace(s), x) {
			return true
		}
	}
	return false
}

func scoreOf(v any) (int, bool) {
	var n int
	switch x := v.(type) {
	case int:
		n = x
	case string:
		i, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil {
			return 0, false
		}
		n = i
	default:
		return 0, false
	}
	if n < 0 || n > 100 {
		return 0, false
	}
	return n, true
}

// decide composes the matches: any malicious match makes the artifact
// malicious (the family of the highest-scoring one, rules without a score
// ranking above all), else any suspicious match suspicious, else benign.
// Informational matches never decide.
func decide(matches []Match, confidence float64) shared.Result {
	var best *Match
	suspicious := false
	for i := range matches {
		mt := &matches[i]
		switch mt.Class {
		case ClassMalicious:
			if best == nil || rank(mt) > rank(best) {
				best = mt
			}
		case ClassSuspicious:
			suspicious = true
		}
	}
	switch {
	case best != nil:
		c := confidence
		if best.score >= 0 {
			c = min(confidence, float64(best.score)/100)
		}
		return shared.Result{Verdict: shared.VerdictMalicious, Confidence: c, MalwareFamily: best.Family}
	case suspicious:
		return shared.Result{Verdict: shared.VerdictSuspicious, Heuristic: true}
	}
	return shared.Result{Verdict: shared.VerdictBenign, Confidence: confidence}
}

func rank(m *Match) int {
	if m.score < 0 {
		return 101
	}
	return m.score
}

// maxMatchesJSON bounds the matches listed in a result. A file can match
// hundreds of rules of a large set (800 samples of four public
// collections, concatenated, matched enough to make a 92 KB answer), and a
// result over the plugin protocol's 64 KiB answer limit (a scan by
// reference) was refused whole: the artifact became unknown. The answer
// to the marketplace carries the list too.
const maxMatchesJSON = 16 << 10

// matchesJSON encodes the matches for Result.Metadata, deciding ones first
// (malicious, then suspicious, then informational, each in the order they
// matched), as many as fit in maxMatchesJSON; omitted is how many did not.
func matchesJSON(ms []Match) (out string, omitted int) {
	if len(ms) == 0 {
		return "", 0
	}
	order := map[Class]int{ClassMalicious: 0, ClassSuspicious: 1, ClassInformational: 2}
	sorted := slices.Clone(ms)
	slices.SortStableFunc(sorted, func(a, b Match) int { return order[a.Class] - order[b.Class] })
	var b strings.Builder
	b.WriteByte('[')
	for i := range sorted {
		if len(sorted[i].Meta) == 0 {
			sorted[i].Meta = nil
		}
		// Meta values are strings, ints and bools: they always encode.
		one, err := json.Marshal(sorted[i])
		if err != nil || b.Len()+len(one)+2 > maxMatchesJSON {
			omitted = len(sorted) - i
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(one)
	}
	b.WriteByte(']')
	return b.String(), omitted
}
