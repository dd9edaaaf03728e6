package pluginmgr_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestInfoMetricNamesTheRunningVersions: microengine_plugin_info carries
// each running plugin's versions as labels.
func TestInfoMetricNamesTheRunningVersions(t *testing.T) {
	f := newFixture(t, bins(t).eicarV1, "")
	m := f.start(fastOptions)
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != "microengine_plugin_info" {
			continue
		}
		labels := map[string]string{}
		for _, l := range fam.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if len(fam.GetMetric()) != 1 || labels["plugin"] != "eicar" || labels["version"] != "1.0.0" || fam.GetMetric()[0].GetGauge().GetValue() != 1 {
			t.Errorf("microengine_plugin_info: %v", fam.GetMetric())
		}
		return
	}
	t.Fatal("no microengine_plugin_info series")
}
