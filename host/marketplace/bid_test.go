package marketplace

import (
	"encoding/json"
	"math"
	"math/big"
	"testing"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/shared"
)

func wei(s string) *big.Int {
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		panic(s)
	}
	return v
}

func TestComputeBid(t *testing.T) {
	const (
		sixteenth = "62500000000000000"   // 1/16 NCT
		one       = "1000000000000000000" // 1 NCT
	)
	usual := Rules{MinAllowedBid: wei(sixteenth), MaxAllowedBid: wei(one)}
	narrow := Rules{MinAllowedBid: wei("200000000000000000"), MaxAllowedBid: wei("1000000000000000000")}
	huge := Rules{MinAllowedBid: wei("100000000000000000000000000000"), MaxAllowedBid: wei("300000000000000000000000000000")}
	mal, ben := shared.VerdictMalicious, shared.VerdictBenign
	for _, tc := range []struct {
		name     string
		strategy config.Bid
		rules    Rules
		verdict  shared.Verdict
		conf     float64
		want     string
	}{
		{"default at 0 is min", config.Bid{Strategy: "default"}, usual, mal, 0, sixteenth},
		{"default at 1 is max", config.Bid{Strategy: "default"}, usual, mal, 1, one},
		{"default halfway", config.Bid{Strategy: "default"}, usual, ben, 0.5, "531250000000000000"},
		{"empty strategy is default", config.Bid{}, usual, ben, 0.25, "296875000000000000"},
		{"conservative is always min", config.Bid{Strategy: "conservative"}, usual, mal, 1, sixteenth},
		{"aggressive at 0 is 8 × min", config.Bid{Strategy: "aggressive"}, usual, mal, 0, "500000000000000000"},
		{"aggressive halfway", config.Bid{Strategy: "aggressive"}, usual, mal, 0.5, "750000000000000000"},
		{"aggressive beyond max is clamped", config.Bid{Strategy: "aggressive"}, narrow, mal, 0, one},
		{"custom", config.Bid{Strategy: "custom", MinMultiplier: 2, MaxMultiplier: 0.5}, usual, mal, 1, "500000000000000000"},
		{"custom below min is clamped", config.Bid{Strategy: "custom", MinMultiplier: 0.5, MaxMultiplier: 0.5}, usual, mal, 0, sixteenth},
		{"custom above max is clamped", config.Bid{Strategy: "custom", MinMultiplier: 1, MaxMultiplier: 3}, usual, mal, 1, one},
		{"big ints beyond int64", config.Bid{Strategy: "default"}, huge, mal, 0.5, "200000000000000000000000000000"},
		{"confidence over 1 clamps", config.Bid{Strategy: "default"}, usual, mal, 7, one},
		{"negative confidence clamps", config.Bid{Strategy: "default"}, usual, mal, -1, sixteenth},
		{"NaN confidence is 0", config.Bid{Strategy: "default"}, usual, mal, math.NaN(), sixteenth},
		{"unknown bids 0", config.Bid{Strategy: "aggressive"}, usual, shared.VerdictUnknown, 1, "0"},
		{"suspicious bids 0", config.Bid{Strategy: "default"}, usual, shared.VerdictSuspicious, 1, "0"},
		{"missing rules use the usual bounds", config.Bid{Strategy: "default"}, Rules{}, mal, 1, one},
		{"rounded down", config.Bid{Strategy: "default"}, Rules{MinAllowedBid: wei("0"), MaxAllowedBid: wei("10")}, mal, 0.33, "3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ComputeBid(tc.strategy, tc.rules, tc.verdict, tc.conf)
			if got.String() != tc.want {
				t.Errorf("bid = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestBidIsAJSONInteger(t *testing.T) {
	raw, err := json.Marshal(Answer{Verdict: shared.VerdictMalicious, Bid: wei("1000000000000000000000")})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"verdict":"malicious","bid":1000000000000000000000,`; string(raw[:len(want)]) != want {
		t.Errorf("got %s", raw)
	}
}
