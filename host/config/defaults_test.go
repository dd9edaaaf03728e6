package config

import (
	"fmt"
	"testing"
	"time"
)

// A hand-built config and a file agree: WithDefaults of an empty block is
// what the decoder gives a block that sets nothing, redirects aside.
func TestMarketplaceWithDefaultsMatchesTheFile(t *testing.T) {
	cfg, diags := Parse([]byte("marketplace {\n  listen = \":0\"\n  webhook_secret = \"s\"\n}\n"), "x.hcl")
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", positions(diags))
	}
	fromFile := *cfg.Marketplace
	fromFile.Listen, fromFile.WebhookSecrets, fromFile.DefRange = "", nil, DefaultMarketplace().DefRange
	if fmt.Sprint(fromFile) != fmt.Sprint(DefaultMarketplace()) {
		t.Errorf("decoded defaults %+v\nDefaultMarketplace %+v", fromFile, DefaultMarketplace())
	}

	got := Marketplace{}.WithDefaults()
	want := DefaultMarketplace()
	want.MaxRedirects = 0   // 0 is a setting of its own: follow no redirect
	want.MetricsListen = "" // and "" serves no metrics listener
	want.Bid.MinMultiplier, want.Bid.MaxMultiplier = 0, 0
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Marketplace{}.WithDefaults() = %+v\nwant %+v", got, want)
	}

	// Set fields are kept; a negative redirect count is none.
	set := Marketplace{Workers: 2, SafetyMargin: time.Second, MaxRedirects: -1, Bid: Bid{Strategy: "aggressive"}}.WithDefaults()
	if set.Workers != 2 || set.SafetyMargin != time.Second || set.MaxRedirects != 0 || set.Bid.Strategy != "aggressive" {
		t.Errorf("WithDefaults changed set fields: %+v", set)
	}
}
