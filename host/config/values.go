package config

import (
	"fmt"
	"math"
	"math/big"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/microengine/microengine/shared"
)

// status says what an attribute decoder found. Required attributes need to
// tell "absent" (report it missing) from "invalid" (already reported).
type status int

const (
	absent  status = iota // not written, or written as null
	valid                 // decoded
	invalid               // a diagnostic was recorded
)

// decoder accumulates diagnostics while decoding one file. It lives for one
// call, so the package keeps no mutable state.
type decoder struct {
	ctx   *hcl.EvalContext
	dir   string // absolute folder of the config file, for relative paths
	diags hcl.Diagnostics
	// quorum is engine.malicious_quorum, checked once the plugins are known.
	quorum *hcl.Attribute
}

func (d *decoder) errorf(rng hcl.Range, summary, detail string) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   detail,
		Subject:  rng.Ptr(),
	})
}

// structural adds the diagnostics of a Body.Content call, naming the place
// they occur in (where, e.g. `plugin "clamav"`), so the first line of each
// says which argument or block is unknown and where.
func (d *decoder) structural(diags hcl.Diagnostics, where string) {
	d.diags = append(d.diags, contextualize(diags, where)...)
}

var (
	// Read-only patterns over hcl's wording for strictness faults; when the
	// wording changes we fall back to prefixing the summary.
	unsupportedArgRe   = regexp.MustCompile(`^An argument named "([^"]+)" is not expected here`)
	unsupportedBlockRe = regexp.MustCompile(`^Blocks of type "([^"]+)" are not expected here`)
)

func contextualize(diags hcl.Diagnostics, where string) hcl.Diagnostics {
	out := make(hcl.Diagnostics, 0, len(diags))
	for _, diag := range diags {
		c := *diag
		switch {
		case c.Summary == "Unsupported argument" && unsupportedArgRe.MatchString(c.Detail):
			name := unsupportedArgRe.FindStringSubmatch(c.Detail)[1]
			c.Summary = join(where, name) + ": unsupported argument"
		case c.Summary == "Unsupported block type" && unsupportedBlockRe.MatchString(c.Detail):
			name := unsupportedBlockRe.FindStringSubmatch(c.Detail)[1]
			c.Summary = prefix(where, fmt.Sprintf("unsupported block %q", name))
		default:
			c.Summary = prefix(where, c.Summary)
		}
		out = append(out, &c)
	}
	return out
}

// join names an attribute inside a place: "engine" + "swap" = "engine.swap";
// plugin places end with a colon-free label, so `plugin "x"` + "timeout" =
// `plugin "x": timeout`.
func join(where, name string) string {
	switch {
	case where == "":
		return name
	case strings.HasSuffix(where, `"`):
		return where + ": " + name
	default:
		return where + "." + name
	}
}

func prefix(where, msg string) string {
	if where == "" {
		return msg
	}
	return where + ": " + msg
}

// eval evaluates an attribute. A null value counts as absent, as in
// Terraform: `x = null` means "use the default".
func (d *decoder) eval(attr *hcl.Attribute) (cty.Value, status) {
	if attr == nil {
		return cty.NilVal, absent
	}
	v, diags := attr.Expr.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return cty.NilVal, invalid
	}
	if v.IsNull() {
		return v, absent
	}
	if !v.IsWhollyKnown() {
		// Only variables can be unknown and the context has none; guard
		// anyway so an unknown never reaches a conversion.
		d.errorf(attr.Expr.Range(), "value is not known", "The value of this expression cannot be determined while reading the configuration.")
		return cty.NilVal, invalid
	}
	return v, valid
}

// str decodes a string. Numbers and bools convert, as everywhere in HCL.
func (d *decoder) str(attr *hcl.Attribute, name string) (string, status) {
	v, st := d.eval(attr)
	if st != valid {
		return "", st
	}
	s, err := convert.Convert(v, cty.String)
	if err != nil {
		d.errorf(attr.Expr.Range(), name+": want a string, not "+friendlyType(v.Type()), "")
		return "", invalid
	}
	return s.AsString(), valid
}

func (d *decoder) boolean(attr *hcl.Attribute, name string) (bool, status) {
	v, st := d.eval(attr)
	if st != valid {
		return false, st
	}
	b, err := convert.Convert(v, cty.Bool)
	if err != nil {
		d.errorf(attr.Expr.Range(), name+": want true or false, not "+describe(v), "")
		return false, invalid
	}
	return b.True(), valid
}

func (d *decoder) number(attr *hcl.Attribute, name string) (*big.Float, status) {
	v, st := d.eval(attr)
	if st != valid {
		return nil, st
	}
	n, err := convert.Convert(v, cty.Number)
	if err != nil {
		d.errorf(attr.Expr.Range(), name+": want a number, not "+describe(v), "")
		return nil, invalid
	}
	f := n.AsBigFloat()
	if f.IsInf() {
		d.errorf(attr.Expr.Range(), name+": want a finite number", "")
		return nil, invalid
	}
	return f, valid
}

// integer decodes a whole number of at least lo.
func (d *decoder) integer(attr *hcl.Attribute, name string, lo int) (int, status) {
	f, st := d.number(attr, name)
	if st != valid {
		return 0, st
	}
	if !f.IsInt() {
		d.errorf(attr.Expr.Range(), fmt.Sprintf("%s: want a whole number, not %s", name, f.Text('g', -1)), "")
		return 0, invalid
	}
	i, acc := f.Int64()
	if acc != big.Exact || i < int64(lo) || i > math.MaxInt32 {
		d.errorf(attr.Expr.Range(), fmt.Sprintf("%s: %s is out of range", name, f.Text('g', -1)),
			fmt.Sprintf("Want a whole number from %d to %d.", lo, math.MaxInt32))
		return 0, invalid
	}
	return int(i), valid
}

// positiveFloat decodes a finite number > 0.
func (d *decoder) positiveFloat(attr *hcl.Attribute, name string) (float64, status) {
	f, st := d.number(attr, name)
	if st != valid {
		return 0, st
	}
	x, _ := f.Float64()
	if !(x > 0) || math.IsInf(x, 0) {
		d.errorf(attr.Expr.Range(), fmt.Sprintf("%s: must be greater than 0, not %s", name, f.Text('g', -1)), "")
		return 0, invalid
	}
	return x, valid
}

const durationHint = `Write a duration as a string with a unit, such as "500ms", "30s", "5m" or "1h30m".`

// duration decodes a string such as "30s". A bare number is refused rather
// than guessed at (seconds? nanoseconds?). With positive, zero is refused
// too: every host duration is a timeout or a period.
func (d *decoder) duration(attr *hcl.Attribute, name string, positive bool) (time.Duration, status) {
	v, st := d.eval(attr)
	if st != valid {
		return 0, st
	}
	if !v.Type().Equals(cty.String) {
		summary := name + ": want a duration string, not " + describe(v)
		if v.Type().Equals(cty.Number) {
			summary = name + ": a duration needs a unit"
		}
		d.errorf(attr.Expr.Range(), summary, durationHint)
		return 0, invalid
	}
	s := v.AsString()
	dur, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		d.errorf(attr.Expr.Range(), fmt.Sprintf("%s: invalid duration %q", name, s), durationHint)
		return 0, invalid
	}
	if dur < 0 || (positive && dur == 0) {
		d.errorf(attr.Expr.Range(), fmt.Sprintf("%s: duration must be greater than 0, not %q", name, s), "")
		return 0, invalid
	}
	return dur, valid
}

const sizeHint = `Write a size as a whole number of bytes (4096) or a string with a unit: "512K", "25M", "100MiB", "1GiB" (K, M, G are binary; KB, MB, GB decimal).`

// size decodes a whole number of bytes or a string with a unit
// (shared.ParseSize). With positive, zero is refused.
func (d *decoder) size(attr *hcl.Attribute, name string, positive bool) (int64, status) {
	v, st := d.eval(attr)
	if st != valid {
		return 0, st
	}
	var n int64
	switch {
	case v.Type().Equals(cty.Number):
		f := v.AsBigFloat()
		i, acc := f.Int64()
		if !f.IsInt() || acc != big.Exact || i < 0 {
			d.errorf(attr.Expr.Range(), fmt.Sprintf("%s: invalid size %s", name, f.Text('g', -1)), sizeHint)
			return 0, invalid
		}
		n = i
	case v.Type().Equals(cty.String):
		var err error
		n, err = shared.ParseSize(v.AsString())
		if err != nil {
			d.errorf(attr.Expr.Range(), fmt.Sprintf("%s: invalid size %q", name, v.AsString()), err.Error()+". "+sizeHint)
			return 0, invalid
		}
	default:
		d.errorf(attr.Expr.Range(), name+": want a size, not "+describe(v), sizeHint)
		return 0, invalid
	}
	if positive && n == 0 {
		d.errorf(attr.Expr.Range(), name+": size must be greater than 0", "")
		return 0, invalid
	}
	return n, valid
}

// stringList decodes a string or a list of strings into a slice.
func (d *decoder) stringList(attr *hcl.Attribute, name string) ([]string, status) {
	v, st := d.eval(attr)
	if st != valid {
		return nil, st
	}
	ty := v.Type()
	if ty.IsTupleType() || ty.IsListType() || ty.IsSetType() {
		l, err := convert.Convert(v, cty.List(cty.String))
		if err != nil || !l.IsWhollyKnown() {
			d.errorf(attr.Expr.Range(), name+": want a string or a list of strings", "")
			return nil, invalid
		}
		out := make([]string, 0, l.LengthInt())
		for it := l.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.IsNull() {
				d.errorf(attr.Expr.Range(), name+": the list holds a null", "")
				return nil, invalid
			}
			out = append(out, e.AsString())
		}
		return out, valid
	}
	s, err := convert.Convert(v, cty.String)
	if err != nil {
		d.errorf(attr.Expr.Range(), name+": want a string or a list of strings, not "+friendlyType(ty), "")
		return nil, invalid
	}
	return []string{s.AsString()}, valid
}

// oneOf decodes a string that must be one of choices.
func oneOf[T ~string](d *decoder, attr *hcl.Attribute, name string, choices ...T) (T, status) {
	s, st := d.str(attr, name)
	if st != valid {
		return T(s), st
	}
	if slices.Contains(choices, T(s)) {
		return T(s), valid
	}
	d.errorf(attr.Expr.Range(), fmt.Sprintf("%s: invalid value %q", name, s), "Want one of: "+quoteList(choices)+".")
	return "", invalid
}

func quoteList[T ~string](xs []T) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}

// friendlyType names a type the way a config author thinks of it.
func friendlyType(ty cty.Type) string {
	switch {
	case ty.IsTupleType(), ty.IsListType(), ty.IsSetType():
		return "a list"
	case ty.IsObjectType(), ty.IsMapType():
		return "an object"
	case ty.Equals(cty.String):
		return "a string"
	case ty.Equals(cty.Number):
		return "a number"
	case ty.Equals(cty.Bool):
		return "a bool"
	}
	return ty.FriendlyName()
}

// describe shows a short scalar value with its type ("the string \"yes\"")
// and only the type of anything else. Only used for non-secret attributes.
func describe(v cty.Value) string {
	if v.Type().Equals(cty.String) && len(v.AsString()) <= 40 {
		return fmt.Sprintf("the string %q", v.AsString())
	}
	return friendlyType(v.Type())
}

// sortDiagnostics orders diagnostics by file position so the output reads
// top to bottom (hcl reports strictness faults in map order). Diagnostics
// without a range come first.
func sortDiagnostics(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		case a.Start.Line != b.Start.Line:
			return a.Start.Line < b.Start.Line
		default:
			return a.Start.Column < b.Start.Column
		}
	})
}
