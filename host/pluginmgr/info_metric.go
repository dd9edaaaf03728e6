package pluginmgr

import "github.com/prometheus/client_golang/prometheus"

// infoCollector exports microengine_plugin_info: one series per plugin,
// labelled with the versions it reports right now. A signature or rule
// reload shows as a new signatures_version; a reload a plugin refused (the
// yara plugin keeps its previous rule set) shows as the old one staying.
type infoCollector struct {
	m    *Manager
	desc *prometheus.Desc
}

func newInfoCollector(m *Manager) *infoCollector {
	return &infoCollector{m: m, desc: prometheus.NewDesc("microengine_plugin_info",
		"The versions a running plugin reports (value 1): its own, its backend's and its signatures' (e.g. the yara plugin's rule count and digest).",
		[]string{"plugin", "version", "vendor_version", "signatures_version"}, nil)}
}

func (c *infoCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *infoCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.m.Status() {
		if !st.Up {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, st.Name, st.Version, st.VendorVersion, st.SignaturesVersion)
	}
}
