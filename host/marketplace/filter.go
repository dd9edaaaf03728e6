package marketplace

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/shared"
)

// Confidence modifiers of the favor and penalize filters, as in
// polyswarm-client.
const (
	favorFactor    = 1.2
	penalizeFactor = 0.8
)

// Filters are the marketplace's filter blocks, compiled once.
//
// A bounty is accepted when no accept filter is configured or at least one
// matches, and no reject filter matches (polyswarm-client's rule). A
// rejected bounty is still answered: unknown, bid 0. Each matching favor
// filter multiplies the confidence by 1.2, each penalize by 0.8; the result
// is clamped to [0, 1].
type Filters struct {
	accept, reject, favor, penalize []filter
}

type filter struct {
	config.Filter
	re  *regexp.Regexp
	num float64 // Value as a number, for the ordering operators
}

// NewFilters compiles the configured filters. The config decoder checks
// them too; this repeats the checks so a hand-built config cannot panic.
func NewFilters(cfgs []config.Filter) (*Filters, error) {
	fs := &Filters{}
	for _, c := range cfgs {
		f := filter{Filter: c}
		switch {
		case c.Op == config.OpRegex:
			re, err := regexp.Compile(c.Value)
			if err != nil {
				return nil, fmt.Errorf("filter %s %s: %w", c.Action, c.Field, err)
			}
			f.re = re
		case c.Op.Ordering():
			n, err := strconv.ParseFloat(c.Value, 64)
			if err != nil {
				return nil, fmt.Errorf("filter %s %s %s: value %q is not a number: %w", c.Action, c.Field, c.Op, c.Value, err)
			}
			f.num = n
		case c.Op == config.OpEqual, c.Op == config.OpContains, c.Op == config.OpStartsWith, c.Op == config.OpEndsWith:
		default:
			return nil, fmt.Errorf("filter %s %s: unknown op %q", c.Action, c.Field, c.Op)
		}
		switch c.Action {
		case config.FilterAccept:
			fs.accept = append(fs.accept, f)
		case config.FilterReject:
			fs.reject = append(fs.reject, f)
		case config.FilterFavor:
			fs.favor = append(fs.favor, f)
		case config.FilterPenalize:
			fs.penalize = append(fs.penalize, f)
		default:
			return nil, fmt.Errorf("filter %q: unknown action (want accept, reject, favor or penalize)", c.Action)
		}
	}
	return fs, nil
}

// Allowed applies accept and reject to a bounty's fields (Bounty.Fields).
// When it refuses, reason says which rule did.
func (fs *Filters) Allowed(fields map[string]string) (ok bool, reason string) {
	if len(fs.accept) > 0 {
		matched := false
		for _, f := range fs.accept {
			if f.match(fields) {
				matched = true
				break
			}
		}
		if !matched {
			return false, "no accept filter matches"
		}
	}
	for _, f := range fs.reject {
		if f.match(fields) {
			return false, "rejected by filter: " + f.String()
		}
	}
	return true, ""
}

// Adjust applies favor and penalize to a confidence.
func (fs *Filters) Adjust(fields map[string]string, confidence float64) float64 {
	c := confidence
	for _, f := range fs.favor {
		if f.match(fields) {
			c *= favorFactor
		}
	}
	for _, f := range fs.penalize {
		if f.match(fields) {
			c *= penalizeFactor
		}
	}
	return shared.ClampConfidence(c)
}

func (f filter) String() string { return fmt.Sprintf("%s %s %q", f.Field, f.Op, f.Value) }

// match is false when the field is absent: a rule about a field a bounty
// does not carry says nothing about it. The ordering operators compare
// numbers and are false for a value that is not one.
func (f filter) match(fields map[string]string) bool {
	v, ok := fields[f.Field]
	if !ok {
		return false
	}
	switch f.Op {
	case config.OpEqual:
		a, errA := strconv.ParseFloat(v, 64)
		b, errB := strconv.ParseFloat(f.Value, 64)
		if errA == nil && errB == nil {
			return a == b
		}
		return v == f.Value
	case config.OpContains:
		return strings.Contains(v, f.Value)
	case config.OpStartsWith:
		return strings.HasPrefix(v, f.Value)
	case config.OpEndsWith:
		return strings.HasSuffix(v, f.Value)
	case config.OpRegex:
		return f.re.MatchString(v)
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return false
	}
	switch f.Op {
	case config.OpLess:
		return n < f.num
	case config.OpLessEq:
		return n <= f.num
	case config.OpGreaterEq:
		return n >= f.num
	case config.OpGreater:
		return n > f.num
	}
	return false
}
