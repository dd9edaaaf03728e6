package verdictcache

import "github.com/prometheus/client_golang/prometheus"

// Collector exposes the cache's counters for /metrics.
func (c *Cache) Collector() prometheus.Collector { return collector{c} }

var (
	descHits      = prometheus.NewDesc("microengine_verdict_cache_hits_total", "Verdicts answered from the cache.", nil, nil)
	descMisses    = prometheus.NewDesc("microengine_verdict_cache_misses_total", "Lookups the cache could not answer.", nil, nil)
	descEvictions = prometheus.NewDesc("microengine_verdict_cache_evictions_total", "Entries dropped to stay within max_entries and max_bytes.", nil, nil)
	descExpired   = prometheus.NewDesc("microengine_verdict_cache_expired_total", "Entries found past their TTL.", nil, nil)
	descEntries   = prometheus.NewDesc("microengine_verdict_cache_entries", "Entries in the cache.", nil, nil)
	descBytes     = prometheus.NewDesc("microengine_verdict_cache_bytes", "Estimated memory the entries take.", nil, nil)
)

type collector struct{ c *Cache }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHits, descMisses, descEvictions, descExpired, descEntries, descBytes} {
		ch <- d
	}
}

func (k collector) Collect(ch chan<- prometheus.Metric) {
	s := k.c.Stats()
	ch <- prometheus.MustNewConstMetric(descHits, prometheus.CounterValue, float64(s.Hits))
	ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(s.Misses))
	ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(s.Evictions))
	ch <- prometheus.MustNewConstMetric(descExpired, prometheus.CounterValue, float64(s.Expired))
	ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(s.Entries))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(s.Bytes))
}
