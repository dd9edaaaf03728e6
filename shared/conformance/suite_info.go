package conformance

// Checks of what the plugin says about itself: INFO-00x.

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/microengine/microengine/shared"
)

// semverRe is semver.org's own pattern.
var semverRe = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

func checkInfo(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageInfo)
	if !ok {
		return out
	}
	info := s.pluginInfo
	var p problems
	switch {
	case info.Name == "":
		p.add("Info.Name is empty")
	case strings.ContainsAny(info.Name, " \t\r\n"):
		p.add("Info.Name %q contains whitespace", info.Name)
	}
	if !semverRe.MatchString(info.Version) {
		p.add("Info.Version %q is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0)", info.Version)
	}
	if len(info.ArtifactTypes) == 0 {
		p.add("Info.ArtifactTypes is empty (or holds no type the host knows: file, url)")
	}
	return p.outcome("%s %s, artifact types %v", info.Name, info.Version, info.ArtifactTypes)
}

func checkInfoVendor(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	// Ask again: the Info of the session was read before Configure.
	info, err := s.info(ctx)
	if err != nil {
		return failf("%v", err)
	}
	version, from := info.VendorVersion, "Info"
	if version == "" {
		if h, err := s.health(ctx); err == nil && h.VendorVersion != "" {
			version, from = h.VendorVersion, "Health"
		}
	}
	var p problems
	if info.Vendor == "" {
		p.add("Info.Vendor is empty")
	}
	if version == "" {
		p.add("neither Info.VendorVersion nor Health's vendor version is set")
	}
	return p.outcome("vendor %q, version %q (from %s)", info.Vendor, version, from)
}

// hclIdentRe is what HCL accepts as an attribute name.
var hclIdentRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

func checkConfigSchema(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageInfo)
	if !ok {
		return out
	}
	var p problems
	seen := map[string]bool{}
	for i, f := range s.pluginInfo.ConfigSchema {
		switch {
		case f.Name == "":
			p.add("field %d has no name", i)
			continue
		case !hclIdentRe.MatchString(f.Name):
			p.add("field %q is not a valid HCL attribute name", f.Name)
		case seen[f.Name]:
			p.add("field %q is declared twice", f.Name)
		}
		seen[f.Name] = true
		if err := checkDefault(f); err != nil {
			p.add("field %q: %v", f.Name, err)
		}
	}
	return p.outcome("settings: %d", len(s.pluginInfo.ConfigSchema))
}

// checkDefault checks that a field's type is known and its default parses
// as that type.
func checkDefault(f shared.ConfigField) error {
	var err error
	switch f.Type {
	case shared.FieldString:
		return nil
	case shared.FieldNumber:
		if f.Default != "" {
			_, err = strconv.ParseFloat(f.Default, 64)
		}
	case shared.FieldBool:
		if f.Default != "" {
			_, err = strconv.ParseBool(f.Default)
		}
	case shared.FieldDuration:
		if f.Default != "" {
			_, err = time.ParseDuration(f.Default)
		}
	case shared.FieldSize:
		if f.Default != "" {
			_, err = shared.ParseSize(f.Default)
		}
	case shared.FieldPath:
		return nil
	case shared.FieldList, shared.FieldPathList:
		if f.Default != "" {
			var l []string
			err = json.Unmarshal([]byte(f.Default), &l)
		}
	case shared.FieldMap:
		if f.Default != "" {
			var m map[string]any
			err = json.Unmarshal([]byte(f.Default), &m)
		}
	default:
		return fmt.Errorf("unknown type %q (want string, number, bool, duration, size, list, path, paths or map)", f.Type)
	}
	if err != nil {
		return fmt.Errorf("default %q is not a %s: %w", f.Default, f.Type, err)
	}
	return nil
}

func checkSamplesDeclared(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageInfo)
	if !ok {
		return out
	}
	var p problems
	var malicious, benign int
	for i, smp := range s.pluginInfo.Samples {
		name := smp.Name
		if name == "" {
			p.add("sample %d has no name", i)
			name = strconv.Itoa(i)
		}
		switch smp.Verdict {
		case shared.VerdictMalicious:
			malicious++
			if smp.MalwareFamily == "" {
				p.add("malicious sample %q declares no family", name)
			}
		case shared.VerdictBenign:
			benign++
		case shared.VerdictSuspicious:
		default:
			p.add("sample %q declares verdict %q, which vouches for nothing", name, smp.Verdict)
		}
	}
	if malicious == 0 {
		p.add("no malicious sample, so SCAN-002 and CHUNK-004 cannot check detection")
	}
	if benign == 0 {
		p.add("no benign sample")
	}
	return p.outcome("%d malicious, %d benign", malicious, benign)
}
