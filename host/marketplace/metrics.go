package marketplace

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the marketplace's Prometheus series. They live on the
// registry the caller passes (the plugin manager registers plugin health on
// the same one), never in package globals.
type metrics struct {
	webhooks     *prometheus.CounterVec // by event and HTTP code
	received     *prometheus.CounterVec // by phase
	duplicates   prometheus.Counter
	answered     *prometheus.CounterVec // by verdict and phase
	unstored     prometheus.Counter     // answered from the cache, its record not stored
	expired      prometheus.Counter
	failed       *prometheus.CounterVec // by verdict
	early        prometheus.Counter     // answered unknown without a scan, for lack of time
	storeRetries prometheus.Counter     // store writes retried (answer commits, outcomes)
	scan         *prometheus.HistogramVec
	fetch        *prometheus.HistogramVec
	toAnswer     prometheus.Histogram
	queue        prometheus.GaugeFunc
	inFlight     prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, queueLen, inFlight func() float64) (*metrics, error) {
	// Bounties live for seconds to minutes; fetches and scans from
	// sub-millisecond (eicar) to tens of seconds (large files on clamd).
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	m := &metrics{
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "microengine_webhooks_total", Help: "Webhook requests by event and HTTP status code.",
		}, []string{"event", "code"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "microengine_bounties_received_total", Help: "New bounties stored, by phase (redeliveries not counted).",
		}, []string{"phase"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "microengine_bounties_duplicate_total", Help: "Redelivered bounties acknowledged but not processed again.",
		}),
		answered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "microengine_bounties_answered_total", Help: "Bounties answered (posted with a 2xx), by verdict and phase.",
		}, []string{"verdict", "phase"}),
		unstored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "microengine_bounties_answered_unstored_total",
			Help: "Bounties answered from the verdict cache whose record was not stored with the answer (its write failed: written again in the background until the store takes it or the bounty expires; or a redelivery stored it first): acknowledged, as answering them again would answer twice.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "microengine_bounties_expired_total", Help: "Bounties that expired before an answer could be computed.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "microengine_bounties_failed_total", Help: "Answers that could not be posted before the expiration, by verdict.",
		}, []string{"verdict"}),
		early: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "microengine_bounties_unscanned_total", Help: "Bounties answered unknown without a scan because no scan could finish before the expiration.",
		}),
		storeRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "microengine_store_write_retries_total", Help: "Answer commits and outcome records retried after the store failed them (a full disk, say).",
		}),
		scan: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "microengine_bounty_scan_seconds", Help: "Engine scan time per bounty, by verdict.", Buckets: buckets,
		}, []string{"verdict"}),
		fetch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "microengine_artifact_fetch_seconds", Help: "Artifact download time, by outcome (ok or error).", Buckets: buckets,
		}, []string{"outcome"}),
		toAnswer: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "microengine_bounty_answer_seconds", Help: "Time from a bounty's receipt to its answer being accepted.", Buckets: buckets,
		}),
		queue: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "microengine_bounty_queue_depth", Help: "Bounties waiting for a worker.",
		}, queueLen),
		inFlight: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "microengine_bounties_in_flight", Help: "Bounties queued or being processed.",
		}, inFlight),
	}
	for _, c := range []prometheus.Collector{m.webhooks, m.received, m.duplicates, m.answered, m.unstored, m.expired,
		m.failed, m.early, m.storeRetries, m.scan, m.fetch, m.toAnswer, m.queue, m.inFlight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
