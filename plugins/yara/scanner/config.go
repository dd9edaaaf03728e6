package scanner

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/microengine/microengine/shared"
)

// Defaults for the plugin's config block.
const (
	DefaultConfidence     = 1.0
	DefaultReloadInterval = 5 * time.Second
)

// Config is the plugin's config block. Each field is one attribute of
// `plugin "yara" { config { ... } }` in engine.hcl, named by its json tag.
type Config struct {
	// Rules are rule files, directories (searched recursively for .yar
	// and .yara) and globs. The host makes them absolute, relative to
	// engine.hcl.
	Rules []string `json:"rules"`
	// Externals are extra external variables: strings, whole numbers and
	// bools. The plugin always defines filename, filepath, extension,
	// filetype and owner.
	Externals map[string]any `json:"externals"`
	// Strict refuses the whole config when one rule file fails to compile;
	// otherwise such a file is skipped and reported.
	Strict          bool     `json:"strict"`
	MaliciousScore  int      `json:"malicious_score"`
	SuspiciousScore int      `json:"suspicious_score"`
	FamilyMeta      []string `json:"family_meta"`
	ScoreMeta       []string `json:"score_meta"`
	Informational   []string `json:"informational"`
	// Confidence of a malicious or benign answer, 0–1; a deciding rule's
	// score/100 lowers it.
	Confidence float64 `json:"confidence"`
	// ReloadInterval is how often the rule files are checked for changes;
	// 0 turns hot reload off.
	ReloadInterval time.Duration `json:"reload_interval"`
	// SpoolDir holds the unlinked files artifacts are spooled to (the
	// system's temporary folder when empty).
	SpoolDir string `json:"spool_dir"`
}

// DefaultConfig is what an absent attribute means. Rules has no default:
// a plugin without rules would call everything benign.
func DefaultConfig() Config {
	m := DefaultMapping()
	return Config{
		MaliciousScore:  m.MaliciousScore,
		SuspiciousScore: m.SuspiciousScore,
		FamilyMeta:      m.FamilyMeta,
		ScoreMeta:       m.ScoreMeta,
		Informational:   m.Informational,
		Confidence:      DefaultConfidence,
		ReloadInterval:  DefaultReloadInterval,
	}
}

func (c Config) mapping() Mapping {
	return Mapping{FamilyMeta: c.FamilyMeta, ScoreMeta: c.ScoreMeta, MaliciousScore: c.MaliciousScore, SuspiciousScore: c.SuspiciousScore, Informational: c.Informational}
}

// Config attribute names.
const (
	keyRules           = "rules"
	keyExternals       = "externals"
	keyStrict          = "strict"
	keyMaliciousScore  = "malicious_score"
	keySuspiciousScore = "suspicious_score"
	keyFamilyMeta      = "family_meta"
	keyScoreMeta       = "score_meta"
	keyInformational   = "informational"
	keyConfidence      = "confidence"
	keyReloadInterval  = "reload_interval"
	keySpoolDir        = "spool_dir"
)

// ConfigSchema describes the config block to the host.
func ConfigSchema() []shared.ConfigField {
	d := DefaultConfig()
	list := func(xs []string) string { b, _ := json.Marshal(xs); return string(b) }
	return []shared.ConfigField{
		{Name: keyRules, Type: shared.FieldPathList, Required: true,
			Description: "rule files, directories (recursive: *.yar, *.yara) and globs, relative to engine.hcl; each file compiles in its own namespace"},
		{Name: keyExternals, Type: shared.FieldMap, Default: "{}",
			Description: "extra external variables (string, whole number or bool); filename, filepath, extension, filetype and owner are always defined"},
		{Name: keyStrict, Type: shared.FieldBool, Default: "false",
			Description: "true: one rule file that fails to compile refuses the config; false: it is skipped and reported"},
		{Name: keyMaliciousScore, Type: shared.FieldNumber, Default: strconv.Itoa(d.MaliciousScore),
			Description: "a matching rule whose meta score (0-100) is at least this is malicious"},
		{Name: keySuspiciousScore, Type: shared.FieldNumber, Default: strconv.Itoa(d.SuspiciousScore),
			Description: "a matching rule whose meta score is at least this (and below malicious_score) is suspicious; lower scores are informational"},
		{Name: keyFamilyMeta, Type: shared.FieldList, Default: list(d.FamilyMeta),
			Description: "meta keys read, in order, for the malware family (else the rule's name)"},
		{Name: keyScoreMeta, Type: shared.FieldList, Default: list(d.ScoreMeta),
			Description: "meta keys read, in order, for a rule's score (0-100); a rule with none is malicious unless informational"},
		{Name: keyInformational, Type: shared.FieldList, Default: list(d.Informational),
			Description: "tags and meta category values that make a match informational: reported, never deciding"},
		{Name: keyConfidence, Type: shared.FieldNumber, Default: "1.0",
			Description: "confidence (0..1) of malicious and benign answers; a deciding rule's score/100 lowers it"},
		{Name: keyReloadInterval, Type: shared.FieldDuration, Default: d.ReloadInterval.String(),
			Description: "how often rule files are checked for changes (a changed set compiles in the background and is swapped in whole); 0 turns it off"},
		{Name: keySpoolDir, Type: shared.FieldPath, Default: "",
			Description: "folder for the unlinked spool files artifacts are scanned from (default: the system's temporary folder)"},
	}
}

var externalNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ParseConfig reads the config block as the host hands it over (a JSON
// object). Every fault is reported, each under its attribute's name.
func ParseConfig(raw []byte) (Config, error) {
	cfg := DefaultConfig()
	if err := shared.DecodeConfig(raw, &cfg); err != nil {
		return DefaultConfig(), err
	}
	return cfg, nil
}

// CheckConfig normalises the decoded values and records every fault
// (shared.DecodeConfig calls it).
func (c *Config) CheckConfig(ce *shared.ConfigError) {
	if len(c.Rules) == 0 {
		ce.Add(keyRules, "is required: list the rule files, directories or globs to load")
	}
	for i, r := range c.Rules {
		if strings.TrimSpace(r) == "" {
			ce.Add(fmt.Sprintf("%s[%d]", keyRules, i), "is empty")
		}
	}
	ext := make(map[string]any, len(c.Externals))
	for k, v := range c.Externals {
		field := keyExternals + "." + k
		if !externalNameRe.MatchString(k) {
			ce.Add(field, "%q is not a valid YARA identifier", k)
			continue
		}
		switch x := v.(type) {
		case string, bool, int64:
			ext[k] = x
		case json.Number:
			if i, err := x.Int64(); err == nil {
				ext[k] = i
				continue
			}
			f, err := x.Float64()
			if err == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
				ext[k] = int64(f)
				continue
			}
			ce.Add(field, "want a string, a whole number or a bool, got %s", x)
		case float64:
			if x == math.Trunc(x) && math.Abs(x) <= 1<<53 {
				ext[k] = int64(x)
				continue
			}
			ce.Add(field, "want a string, a whole number or a bool, got %v", x)
		default:
			ce.Add(field, "want a string, a whole number or a bool, got %v", v)
		}
	}
	c.Externals = ext
	for _, s := range []struct {
		key string
		v   int
	}{{keyMaliciousScore, c.MaliciousScore}, {keySuspiciousScore, c.SuspiciousScore}} {
		if s.v < 0 || s.v > 100 {
			ce.Add(s.key, "must be between 0 and 100, got %d", s.v)
		}
	}
	if c.SuspiciousScore > c.MaliciousScore {
		ce.Add(keySuspiciousScore, "%d is above malicious_score (%d)", c.SuspiciousScore, c.MaliciousScore)
	}
	if c.Confidence < 0 || c.Confidence > 1 || math.IsNaN(c.Confidence) {
		ce.Add(keyConfidence, "must be between 0 and 1, got %v", c.Confidence)
	}
	if c.ReloadInterval < 0 {
		ce.Add(keyReloadInterval, "must not be negative, got %s", c.ReloadInterval)
	}
	if c.SpoolDir != "" {
		if fi, err := os.Stat(c.SpoolDir); err != nil || !fi.IsDir() {
			ce.Add(keySpoolDir, "%s is not a folder", c.SpoolDir)
		}
		c.SpoolDir = filepath.Clean(c.SpoolDir)
	}
	c.FamilyMeta = slices.Clone(c.FamilyMeta)
	c.ScoreMeta = slices.Clone(c.ScoreMeta)
	c.Informational = slices.Clone(c.Informational)
}

// equal compares two configs (Configure is idempotent).
func (c Config) equal(o Config) bool {
	a, _ := json.Marshal(c)
	b, _ := json.Marshal(o)
	return string(a) == string(b)
}
