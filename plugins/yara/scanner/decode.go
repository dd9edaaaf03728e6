package scanner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/microengine/microengine/shared"
)

// decodeConfig reads the JSON block into cfg, strictly: an unknown
// attribute or a value of the wrong type is a fault under its name.
func decodeConfig(raw []byte, cfg *Config) error {
	ce := &shared.ConfigError{}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	var attrs map[string]json.RawMessage
	if err := json.Unmarshal(raw, &attrs); err != nil {
		return ce.Add("", "config is not a JSON object: %v", err)
	}
	names := make([]string, 0, len(attrs))
	for k := range attrs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := attrs[k]
		if string(bytes.TrimSpace(v)) == "null" {
			continue
		}
		var err error
		switch k {
		case keyRules:
			err = json.Unmarshal(v, &cfg.Rules)
		case keyExternals:
			dec := json.NewDecoder(bytes.NewReader(v))
			dec.UseNumber()
			err = dec.Decode(&cfg.Externals)
		case keyStrict:
			err = json.Unmarshal(v, &cfg.Strict)
		case keyMaliciousScore:
			err = json.Unmarshal(v, &cfg.MaliciousScore)
		case keySuspiciousScore:
			err = json.Unmarshal(v, &cfg.SuspiciousScore)
		case keyFamilyMeta:
			err = json.Unmarshal(v, &cfg.FamilyMeta)
		case keyInformational:
			err = json.Unmarshal(v, &cfg.Informational)
		case keyConfidence:
			err = json.Unmarshal(v, &cfg.Confidence)
		case keyReloadInterval:
			var s string
			if err = json.Unmarshal(v, &s); err == nil {
				cfg.ReloadInterval, err = time.ParseDuration(strings.TrimSpace(s))
			}
		case keySpoolDir:
			err = json.Unmarshal(v, &cfg.SpoolDir)
		default:
			ce.Add(k, "unknown attribute (known: %s)", strings.Join([]string{keyConfidence, keyExternals, keyFamilyMeta,
				keyInformational, keyMaliciousScore, keyReloadInterval, keyRules, keySpoolDir, keyStrict, keySuspiciousScore}, ", "))
			continue
		}
		if err != nil {
			ce.Add(k, "%v", fmt.Errorf("wrong type: %w", err))
		}
	}
	return ce.Err()
}
