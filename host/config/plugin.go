package config

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/launch"
)

var (
	pluginSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "path"},
			{Name: "sha256"},
			{Name: "timeout"},
			{Name: "enabled"},
			{Name: "max_verdict"},
			{Name: "weight"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "config"}},
	}
	// Plugin names appear in logs, metrics and binary names
	// (microengine-plugin-NAME): keep them to one plain word.
	pluginNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
)

func (d *decoder) decodePlugins(blocks []*hcl.Block) []Plugin {
	first := map[string]*hcl.Block{}
	var out []Plugin
	for _, b := range blocks {
		name := b.Labels[0]
		where := fmt.Sprintf("plugin %q", name)
		if !pluginNameRe.MatchString(name) {
			d.errorf(b.LabelRanges[0], where+": invalid plugin name",
				"A plugin name is letters, digits, '-' and '_', starting with a letter or digit.")
		}
		if f, dup := first[name]; dup {
			d.errorf(b.DefRange, where+": duplicate plugin name",
				fmt.Sprintf("Plugin %q is already defined at %s; each plugin block needs its own name.", name, shortPos(f.DefRange)))
			continue
		}
		first[name] = b
		out = append(out, d.decodePlugin(b, name, where))
	}
	return out
}

func (d *decoder) decodePlugin(b *hcl.Block, name, where string) Plugin {
	p := Plugin{
		Name:        name,
		Timeout:     DefaultPluginTimeout,
		Enabled:     true,
		DefRange:    b.DefRange,
		ConfigRange: b.DefRange,
	}
	content, diags := b.Body.Content(pluginSchema)
	d.structural(diags, where)
	a := content.Attributes

	for _, cb := range content.Blocks {
		if p.Body != nil {
			d.errorf(cb.DefRange, where+": duplicate config block",
				fmt.Sprintf("A plugin has one config block; the first is at %s.", shortPos(p.ConfigRange)))
			continue
		}
		// Kept undecoded: only the plugin knows its schema (DecodePluginBody).
		p.Body, p.ConfigRange = cb.Body, cb.DefRange
	}
	if v, st := d.duration(a["timeout"], join(where, "timeout"), true); st == valid {
		p.Timeout = v
	}
	if v, st := d.boolean(a["enabled"], join(where, "enabled")); st == valid {
		p.Enabled = v
	}
	if v, st := oneOf(d, a["max_verdict"], join(where, "max_verdict"), shared.VerdictMalicious, shared.VerdictSuspicious); st == valid {
		p.MaxVerdict = v
	}
	if f, st := d.number(a["weight"], join(where, "weight")); st == valid {
		w, _ := f.Float64()
		if w < 0 || w > 1 {
			d.errorf(a["weight"].Expr.Range(), join(where, "weight")+": must be between 0 and 1, not "+f.Text('g', -1),
				"The weight scales the plugin's confidence, which drives the bid.")
		} else {
			p.Weight = &w
		}
	}

	path, pathSt := d.str(a["path"], join(where, "path"))
	switch {
	case pathSt == absent:
		d.errorf(b.DefRange, where+": missing path",
			`Set path to the plugin binary, relative to this file, e.g. path = "./bin/microengine-plugin-`+name+`".`)
	case pathSt == valid && path == "":
		d.errorf(a["path"].Expr.Range(), join(where, "path")+": must not be empty", "")
		pathSt = invalid
	case pathSt == valid:
		p.Path = d.abs(path)
	}

	pin, pinSt := d.str(a["sha256"], join(where, "sha256"))
	if pinSt == valid {
		pin = strings.ToLower(strings.TrimSpace(pin))
		if _, err := hex.DecodeString(pin); err != nil || len(pin) != 64 {
			d.errorf(a["sha256"].Expr.Range(), join(where, "sha256")+": want 64 hexadecimal digits",
				fmt.Sprintf("Got %d characters. Compute the pin with: sha256sum %s", len(pin), cmp.Or(p.Path, "BINARY")))
			pinSt = invalid
		} else {
			p.SHA256 = pin
		}
	}

	// A disabled plugin is not launched, so its binary may be missing (it
	// is often disabled precisely because it is not installed yet).
	if pathSt != valid || !p.Enabled {
		return p
	}
	if !d.checkBinary(a["path"].Expr.Range(), join(where, "path"), p.Path) {
		return p
	}
	if pinSt == valid {
		got, err := launch.FileSHA256(p.Path)
		switch {
		case err != nil:
			d.errorf(a["path"].Expr.Range(), join(where, "path")+": cannot hash the binary", err.Error())
		case got != p.SHA256:
			d.errorf(a["sha256"].Expr.Range(), join(where, "sha256")+": the binary does not match the pin",
				fmt.Sprintf("%s has sha256 %s; the pin is %s. If the binary was rebuilt on purpose, update the pin.", p.Path, got, p.SHA256))
		}
	}
	return p
}

// checkBinary reports whether path is an executable regular file.
func (d *decoder) checkBinary(rng hcl.Range, name, path string) bool {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.errorf(rng, name+": plugin binary not found", fmt.Sprintf("%s does not exist. Build it (make build) or fix the path; it is relative to the config file.", path))
		return false
	case err != nil:
		d.errorf(rng, name+": cannot use the plugin binary", err.Error())
		return false
	case !fi.Mode().IsRegular():
		d.errorf(rng, name+": the plugin binary is not a regular file", path+" is a "+fileKind(fi.Mode())+".")
		return false
	case fi.Mode().Perm()&0o111 == 0:
		d.errorf(rng, name+": the plugin binary is not executable", fmt.Sprintf("%s has mode %s; chmod +x it.", path, fi.Mode().Perm()))
		return false
	}
	return true
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// DecodePluginBody decodes a plugin's config block against the schema the
// plugin declares (Info.ConfigSchema) and returns it as the canonical JSON
// object the plugin's Configure takes: strings and bools as they are,
// numbers as JSON numbers, durations as Go duration strings ("1m30s"),
// sizes as integer bytes, lists as arrays of strings (a lone string is a
// list of one), maps as objects of strings, numbers and bools, and paths
// made absolute against the config file's folder (the plugin runs in the
// host's working directory, which need not be that folder). Only attributes written in the file appear: the
// schema's defaults are the plugin's to apply. Decoding is strict: an
// attribute the schema does not declare is an error at that attribute, and
// a required one that is missing is an error at the config block.
//
// ctx is normally cfg.EvalContext(); nil means a fresh NewEvalContext from
// the plugin's file.
func DecodePluginBody(p Plugin, schema []shared.ConfigField, ctx *hcl.EvalContext) ([]byte, hcl.Diagnostics) {
	where := fmt.Sprintf("plugin %q: config", p.Name)
	if ctx == nil {
		ctx = NewEvalContext(absDir(p.DefRange.Filename))
	}
	d := &decoder{ctx: ctx, dir: absDir(p.DefRange.Filename)}

	hs := &hcl.BodySchema{}
	seen := map[string]bool{}
	for _, f := range schema {
		if seen[f.Name] || f.Name == "" {
			// A plugin bug, but the user is the one who sees it: say so.
			d.errorf(p.DefRange, fmt.Sprintf("plugin %q declares the config field %q twice or with no name", p.Name, f.Name),
				"This is a fault in the plugin, not in the configuration; report it to the plugin's author.")
			continue
		}
		seen[f.Name] = true
		hs.Attributes = append(hs.Attributes, hcl.AttributeSchema{Name: f.Name})
	}
	if d.diags.HasErrors() {
		return nil, d.diags
	}

	var attrs hcl.Attributes
	if p.Body != nil {
		content, diags := p.Body.Content(hs)
		d.structural(diags, where)
		attrs = content.Attributes
	}

	out := make(map[string]any, len(attrs))
	for _, f := range schema {
		attr := attrs[f.Name]
		name := where + "." + f.Name
		var st status
		if !d.declaredType(attr, name, f) {
			continue
		}
		switch f.Type {
		case shared.FieldString:
			var s string
			if s, st = d.str(attr, name); st == valid {
				out[f.Name] = s
			}
		case shared.FieldBool:
			var b bool
			if b, st = d.boolean(attr, name); st == valid {
				out[f.Name] = b
			}
		case shared.FieldNumber:
			if n, nst := d.number(attr, name); nst == valid {
				out[f.Name] = jsonNumber(n)
			} else {
				st = nst
			}
		case shared.FieldDuration:
			// Zero is allowed: to a plugin it may mean "no limit".
			var v time.Duration
			if v, st = d.duration(attr, name, false); st == valid {
				out[f.Name] = v.String()
			}
		case shared.FieldSize:
			var n int64
			if n, st = d.size(attr, name, false); st == valid {
				out[f.Name] = n
			}
		case shared.FieldList:
			var l []string
			if l, st = d.stringList(attr, name); st == valid {
				out[f.Name] = l
			}
		case shared.FieldPath:
			var s string
			if s, st = d.str(attr, name); st == valid {
				if s != "" {
					s = d.abs(s)
				}
				out[f.Name] = s
			}
		case shared.FieldPathList:
			var l []string
			if l, st = d.stringList(attr, name); st == valid {
				for i, s := range l {
					if s != "" {
						l[i] = d.abs(s)
					}
				}
				out[f.Name] = l
			}
		case shared.FieldMap:
			var m map[string]any
			if m, st = d.scalarMap(attr, name); st == valid {
				out[f.Name] = m
			}
		default:
			d.errorf(p.DefRange, fmt.Sprintf("plugin %q declares the config field %q with unknown type %q", p.Name, f.Name, f.Type),
				"This is a fault in the plugin, not in the configuration; report it to the plugin's author.")
			continue
		}
		if st == absent && f.Required {
			detail := fmt.Sprintf("The plugin needs %s (a %s).", f.Name, f.Type)
			if f.Description != "" {
				detail += " " + f.Description
			}
			d.errorf(p.ConfigRange, fmt.Sprintf("%s: missing required argument %q", where, f.Name), detail)
		}
	}
	sortDiagnostics(d.diags)
	if d.diags.HasErrors() {
		return nil, d.diags
	}
	js, err := json.Marshal(out)
	if err != nil {
		// Every value above is a string, bool, int64, valid json.Number,
		// or a list or map of those.
		return nil, append(d.diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  where + ": cannot encode as JSON",
			Detail:   fmt.Errorf("encode plugin config: %w", err).Error(),
			Subject:  p.ConfigRange.Ptr(),
		})
	}
	return js, d.diags
}

// stringTypes are the field types whose value must be written as a
// string. HCL would convert `marker = 5` or `marker = true` to a string
// without a word; that is more likely a slip than a wish, so it is a
// diagnostic, as the schema promises. The other way round stays open: a
// number or bool field takes a string that reads as one, since env()
// gives strings.
var stringTypes = map[shared.FieldType]bool{shared.FieldString: true, shared.FieldPath: true}

// listTypes are the field types written as a list of strings, or as one
// string: a number or a bool, alone or in the list, is refused the same
// way (`rules = 5` would otherwise be the path "./5").
var listTypes = map[shared.FieldType]bool{shared.FieldList: true, shared.FieldPathList: true}

// declaredType reports whether attr's value has the type f declares (or is
// absent, or fails to evaluate: the decoding that follows reports that).
func (d *decoder) declaredType(attr *hcl.Attribute, name string, f shared.ConfigField) bool {
	if attr == nil || (!stringTypes[f.Type] && !listTypes[f.Type]) {
		return true
	}
	v, diags := attr.Expr.Value(d.ctx)
	if diags.HasErrors() || v.IsNull() || !v.IsWhollyKnown() {
		return true
	}
	if listTypes[f.Type] && (v.Type().IsTupleType() || v.Type().IsListType()) {
		ok := true
		for i, it := 0, v.ElementIterator(); it.Next(); i++ {
			_, e := it.Element()
			if lit, bad := notString(e); bad {
				d.errorf(attr.Expr.Range(), fmt.Sprintf("%s[%d]: want a string, not the %s %s", name, i, strings.TrimPrefix(friendlyType(e.Type()), "a "), lit),
					fmt.Sprintf("The plugin declares %s as a %s: quote the value (%q) if it is meant.", f.Name, f.Type, lit))
				ok = false
			}
		}
		return ok
	}
	// A list or an object is left to the decoding, which says so already.
	lit, bad := notString(v)
	if !bad {
		return true
	}
	want := "a string"
	if listTypes[f.Type] {
		want = "a string or a list of strings"
	}
	d.errorf(attr.Expr.Range(), fmt.Sprintf("%s: want %s, not the %s %s", name, want, strings.TrimPrefix(friendlyType(v.Type()), "a "), lit),
		fmt.Sprintf("The plugin declares %s as a %s: quote the value (%q) if it is meant.", f.Name, f.Type, lit))
	return false
}

// notString reports whether v is a number or a bool (which HCL would turn
// into a string without a word), with its literal.
func notString(v cty.Value) (string, bool) {
	if v.IsNull() || !v.IsKnown() || !v.Type().IsPrimitiveType() || v.Type().Equals(cty.String) {
		return "", false
	}
	switch {
	case v.Type().Equals(cty.Number):
		return v.AsBigFloat().Text('g', -1), true
	case v.Type().Equals(cty.Bool) && v.False():
		return "false", true
	}
	return "true", true
}

// PluginFieldDiagnostics turns the faults a plugin found in its own
// configuration (Configure's *shared.ConfigError) into diagnostics at the
// attribute each one names, so a fault found by the plugin reads like one
// found by the host: `plugin "clamav": config.address: <message>` at
// FILE:LINE:COL. A field may be a path ("tls.cert", "rules[2]"); its first
// element picks the attribute. A fault with no field, or naming one that is
// not written in the file, points at the config block (the plugin block
// when there is none).
func PluginFieldDiagnostics(p Plugin, ce *shared.ConfigError) hcl.Diagnostics {
	if ce == nil {
		return nil
	}
	var attrs hcl.Attributes
	if p.Body != nil {
		// Diagnostics are ignored: the body was decoded before, and a
		// lookup by name is all that is needed here.
		attrs, _ = p.Body.JustAttributes()
	}
	var diags hcl.Diagnostics
	for _, fe := range ce.Fields {
		rng := p.ConfigRange
		summary := fmt.Sprintf("plugin %q: config: %s", p.Name, fe.Message)
		if fe.Field != "" {
			summary = fmt.Sprintf("plugin %q: config.%s: %s", p.Name, fe.Field, fe.Message)
			top := fe.Field
			if i := strings.IndexAny(top, ".["); i >= 0 {
				top = top[:i]
			}
			if attr, ok := attrs[top]; ok {
				rng = attr.Expr.Range()
			}
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  summary,
			Detail:   "Reported by the plugin when applying its configuration.",
			Subject:  rng.Ptr(),
		})
	}
	sortDiagnostics(diags)
	return diags
}

// jsonNumber writes whole numbers without an exponent, because Go's
// encoding/json refuses 1e+06 for an integer field and a plugin will most
// likely decode counts into ints; other numbers get the shortest exact text.
func jsonNumber(f *big.Float) json.Number {
	if f.IsInt() {
		return json.Number(f.Text('f', 0))
	}
	return json.Number(f.Text('g', -1))
}

// scalarMap decodes an object whose values are strings, numbers or bools
// (a plugin's map field, e.g. YARA's external variables).
func (d *decoder) scalarMap(attr *hcl.Attribute, name string) (map[string]any, status) {
	v, st := d.eval(attr)
	if st != valid {
		return nil, st
	}
	ty := v.Type()
	if !ty.IsObjectType() && !ty.IsMapType() {
		d.errorf(attr.Expr.Range(), name+": want an object such as { key = \"value\" }, not "+friendlyType(ty), "")
		return nil, invalid
	}
	out := map[string]any{}
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		key := k.AsString()
		switch {
		case e.IsNull():
			d.errorf(attr.Expr.Range(), fmt.Sprintf("%s.%s: is null", name, key), "Each value is a string, a number or a bool.")
			return nil, invalid
		case e.Type().Equals(cty.String):
			out[key] = e.AsString()
		case e.Type().Equals(cty.Bool):
			out[key] = e.True()
		case e.Type().Equals(cty.Number):
			f := e.AsBigFloat()
			if f.IsInf() {
				d.errorf(attr.Expr.Range(), fmt.Sprintf("%s.%s: want a finite number", name, key), "")
				return nil, invalid
			}
			out[key] = jsonNumber(f)
		default:
			d.errorf(attr.Expr.Range(), fmt.Sprintf("%s.%s: want a string, a number or a bool, not %s", name, key, friendlyType(e.Type())), "")
			return nil, invalid
		}
	}
	return out, valid
}
