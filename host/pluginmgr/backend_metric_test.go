package pluginmgr_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/internal/testbin"
)

// TestBackendMetricsPerClamd: the clamav plugin with a pool of two clamds
// reports each one's health and load, and /metrics carries them per
// backend; a clamd that goes down shows as 0.
func TestBackendMetricsPerClamd(t *testing.T) {
	clamav := testbin.BuildT(t, "microengine-plugin-clamav", "./plugins/clamav")
	d1 := devclamd.StartT(t, devclamd.Options{})
	d2 := devclamd.StartT(t, devclamd.Options{})
	f := newNamedFixture(t, "clamav", clamav, fmt.Sprintf("  config {\n    address = [%q, %q]\n  }", d1.Address(), d2.Address()))
	m := f.start(fastOptions)
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	healthy := func() map[string]float64 {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, fam := range families {
			if fam.GetName() != "microengine_plugin_backend_healthy" {
				continue
			}
			for _, metric := range fam.GetMetric() {
				labels := map[string]string{}
				for _, l := range metric.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["plugin"] == "clamav" {
					out[labels["backend"]] = metric.GetGauge().GetValue()
				}
			}
		}
		return out
	}
	// The health checks run every 200 ms here: wait for the state wanted.
	waitFor := func(what string, ok func(map[string]float64) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := healthy()
			if ok(got) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: microengine_plugin_backend_healthy = %v", what, got)
			}
			time.Sleep(50 * time.Millisecond) // the next health check; nothing to wait on
		}
	}
	waitFor("both clamds up", func(got map[string]float64) bool {
		return got[d1.Address()] == 1 && got[d2.Address()] == 1
	})
	d2.Kill()
	waitFor("the killed clamd down", func(got map[string]float64) bool {
		v, ok := got[d2.Address()]
		return got[d1.Address()] == 1 && ok && v == 0
	})
}
