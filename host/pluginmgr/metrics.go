package pluginmgr

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/microengine/microengine/shared"
)

type metrics struct {
	up           *prometheus.GaugeVec
	healthy      *prometheus.GaugeVec
	restarts     *prometheus.CounterVec
	swaps        *prometheus.CounterVec
	swapFailures *prometheus.CounterVec
	// crashes, crashRetries and crashedArtifacts tell a plugin that dies on
	// some content from one that dies for other reasons.
	crashes          *prometheus.CounterVec
	crashRetries     *prometheus.CounterVec
	crashedArtifacts *prometheus.CounterVec
	// backendHealthy and backendInFlight are per backend instance of a
	// plugin (each clamd of a pool), as its last health check gave them.
	backendHealthy  *prometheus.GaugeVec
	backendInFlight *prometheus.GaugeVec
}

func newMetrics() *metrics {
	return &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "microengine_plugin_up", Help: "1 when a plugin process is serving scans.",
		}, []string{"plugin"}),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "microengine_plugin_healthy", Help: "1 when the plugin's last health check (which reaches its backend) passed.",
		}, []string{"plugin"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "microengine_plugin_restarts_total", Help: "Plugin processes relaunched after a crash or hang.",
		}, []string{"plugin"}),
		swaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "microengine_plugin_swaps_total", Help: "Plugin processes replaced by a reload or a new binary.",
		}, []string{"plugin"}),
		swapFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "microengine_plugin_swap_failures_total", Help: "Replacements refused (start, pin or health failed); the old process kept serving.",
		}, []string{"plugin"}),
		crashes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "microengine_plugin_crashes_total", Help: "Plugin processes that exited without being asked to (a panic, a fatal signal, an exit).",
		}, []string{"plugin"}),
		crashRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "microengine_plugin_crash_retries_total", Help: "Scans retried alone on a relaunched process because the plugin died under them.",
		}, []string{"plugin"}),
		crashedArtifacts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "microengine_plugin_crashed_artifacts_total", Help: "Artifacts answered unknown because they crashed the plugin again when retried alone.",
		}, []string{"plugin"}),
		backendHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "microengine_plugin_backend_healthy", Help: "1 when a backend instance of the plugin (e.g. one clamd of a pool) passed its last health check: it answers and its answers are trusted.",
		}, []string{"plugin", "backend"}),
		backendInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "microengine_plugin_backend_in_flight", Help: "Scans a backend instance of the plugin held at its last health check.",
		}, []string{"plugin", "backend"}),
	}
}

// Register adds the plugin metrics to reg.
func (m *Manager) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.metrics.up, m.metrics.healthy, m.metrics.restarts, m.metrics.swaps, m.metrics.swapFailures,
		m.metrics.crashes, m.metrics.crashRetries, m.metrics.crashedArtifacts,
		m.metrics.backendHealthy, m.metrics.backendInFlight, newInfoCollector(m)} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// setBackends replaces a plugin's per-backend series with those of its
// last health check, so a backend removed from its config disappears.
func (m *metrics) setBackends(plugin string, backends []shared.BackendHealth) {
	m.backendHealthy.DeletePartialMatch(prometheus.Labels{"plugin": plugin})
	m.backendInFlight.DeletePartialMatch(prometheus.Labels{"plugin": plugin})
	for _, b := range backends {
		m.backendHealthy.WithLabelValues(plugin, b.Name).Set(boolGauge(b.Healthy))
		m.backendInFlight.WithLabelValues(plugin, b.Name).Set(float64(b.InFlight))
	}
}
