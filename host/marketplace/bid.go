package marketplace

import (
	"math"
	"math/big"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/shared"
)

// ComputeBid is polyswarm-client's bid, in integer wei:
//
//	lo  = min_allowed_bid × min multiplier
//	hi  = max_allowed_bid × max multiplier
//	bid = lo + (hi − lo) × confidence
//
// with the strategies default (1, 1), aggressive (8, 1), conservative
// (always min_allowed_bid) and custom (the configured multipliers). Unlike
// the original client every result is clamped to [min_allowed_bid,
// max_allowed_bid], so aggressive can no longer overshoot the maximum.
// Only malicious and benign bid; unknown and suspicious bid 0.
//
// The arithmetic is exact (big.Rat over the float64 inputs, which are
// exact binary fractions) and the result is rounded down.
func ComputeBid(strategy config.Bid, rules Rules, verdict shared.Verdict, confidence float64) *big.Int {
	if verdict != shared.VerdictMalicious && verdict != shared.VerdictBenign {
		return new(big.Int)
	}
	def := DefaultRules()
	lo, hi := rules.MinAllowedBid, rules.MaxAllowedBid
	if lo == nil {
		lo = def.MinAllowedBid
	}
	if hi == nil {
		hi = def.MaxAllowedBid
	}
	if lo.Cmp(hi) > 0 { // refused by ParseBounty; never bid outside anyway
		return new(big.Int).Set(hi)
	}

	minMul, maxMul := 1.0, 1.0
	switch strategy.Strategy {
	case config.BidConservative:
		return new(big.Int).Set(lo)
	case config.BidAggressive:
		minMul = 8
	case config.BidCustom:
		minMul, maxMul = positiveOr1(strategy.MinMultiplier), positiveOr1(strategy.MaxMultiplier)
	}
	c := shared.ClampConfidence(confidence)

	low := new(big.Rat).Mul(new(big.Rat).SetInt(lo), ratOf(minMul))
	high := new(big.Rat).Mul(new(big.Rat).SetInt(hi), ratOf(maxMul))
	span := new(big.Rat).Sub(high, low)
	bid := new(big.Rat).Add(low, span.Mul(span, ratOf(c)))

	// Round down: Quo truncates toward zero, and a negative value (a
	// custom multiplier below the span) is clamped up to lo below anyway.
	out := new(big.Int).Quo(bid.Num(), bid.Denom())
	switch {
	case out.Cmp(lo) < 0:
		out.Set(lo)
	case out.Cmp(hi) > 0:
		out.Set(hi)
	}
	return out
}

func ratOf(f float64) *big.Rat {
	r := new(big.Rat)
	if r.SetFloat64(f) == nil { // NaN or ±Inf: treat as 0
		return new(big.Rat)
	}
	return r
}

func positiveOr1(f float64) float64 {
	if f > 0 && !math.IsInf(f, 0) {
		return f
	}
	return 1
}
