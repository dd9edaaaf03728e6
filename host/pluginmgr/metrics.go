package pluginmgr

import "github.com/prometheus/client_golang/prometheus"

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
	}
}

// Register adds the plugin metrics to reg.
func (m *Manager) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.metrics.up, m.metrics.healthy, m.metrics.restarts, m.metrics.swaps, m.metrics.swapFailures,
		m.metrics.crashes, m.metrics.crashRetries, m.metrics.crashedArtifacts, newInfoCollector(m)} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
