package config

// The settings of engine.hcl that take one of a few words have a type each,
// as shared.Verdict does, so the packages that act on them switch over
// constants rather than spell the words again.

// SwapMode says when the engine replaces a plugin whose binary changed.
type SwapMode string

const (
	// SwapWatch replaces a plugin as soon as its binary changes on disk.
	SwapWatch SwapMode = "watch"
	// SwapReload replaces plugins only on SIGHUP or `microengine reload`.
	SwapReload SwapMode = "reload"
)

// BidStrategy picks the multipliers of the bid (see Bid).
type BidStrategy string

const (
	// BidDefault bids min + (max − min) × confidence.
	BidDefault BidStrategy = "default"
	// BidAggressive multiplies the lower bound by 8.
	BidAggressive BidStrategy = "aggressive"
	// BidConservative always bids the minimum.
	BidConservative BidStrategy = "conservative"
	// BidCustom takes Bid.MinMultiplier and Bid.MaxMultiplier.
	BidCustom BidStrategy = "custom"
)

// FilterAction is what a filter does to a bounty it matches.
type FilterAction string

const (
	// FilterAccept: with any accept filter, a bounty must match one.
	FilterAccept FilterAction = "accept"
	// FilterReject: a bounty that matches is answered unknown, bid 0.
	FilterReject FilterAction = "reject"
	// FilterFavor multiplies the confidence by 1.2.
	FilterFavor FilterAction = "favor"
	// FilterPenalize multiplies the confidence by 0.8.
	FilterPenalize FilterAction = "penalize"
)

// FilterOp compares a bounty's field with a filter's value.
type FilterOp string

const (
	OpLess       FilterOp = "<"
	OpLessEq     FilterOp = "<="
	OpEqual      FilterOp = "=="
	OpGreaterEq  FilterOp = ">="
	OpGreater    FilterOp = ">"
	OpContains   FilterOp = "contains"
	OpStartsWith FilterOp = "startswith"
	OpEndsWith   FilterOp = "endswith"
	OpRegex      FilterOp = "regex"
)

// Ordering reports whether o compares numbers (< <= >= >).
func (o FilterOp) Ordering() bool {
	switch o {
	case OpLess, OpLessEq, OpGreaterEq, OpGreater:
		return true
	}
	return false
}

// The valid values, in the order diagnostics list them.
var (
	swapModes     = []SwapMode{SwapWatch, SwapReload}
	bidStrategies = []BidStrategy{BidDefault, BidAggressive, BidConservative, BidCustom}
	filterActions = []FilterAction{FilterAccept, FilterReject, FilterFavor, FilterPenalize}
	filterOps     = []FilterOp{OpLess, OpLessEq, OpEqual, OpGreaterEq, OpGreater, OpContains, OpStartsWith, OpEndsWith, OpRegex}
)
