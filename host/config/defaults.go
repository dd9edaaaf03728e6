package config

import "time"

// The defaults of engine.hcl, in one place. The decoder starts from them,
// and packages handed a configuration built in code (tests, embedders) fill
// its zero fields from the same values (Marketplace.WithDefaults), so a
// file and a hand-built config agree.
const (
	// DefaultDataDir is resolved against the config file's folder.
	DefaultDataDir  = "data"
	DefaultLogLevel = "info"
	// DefaultConcurrency is how many artifacts `scan` has in flight.
	// Plugins bound their own backends (the clamav plugin's
	// max_connections); what this sets is the depth of the pipeline to
	// them: with artifacts by reference in batches, a deep one lets host
	// and plugin pass many artifacts per message and wakeup (4,000 × 4
	// KiB: 3,900 messages each way at 8 or 128 in flight without holding
	// back; ~8 artifacts a message at 64 with it, and a third fewer
	// context switches).
	DefaultConcurrency    = 64
	DefaultSwap           = SwapWatch
	DefaultHealthInterval = 10 * time.Second
	DefaultDrainTimeout   = 60 * time.Second
	// DefaultMaliciousQuorum: one malicious answer makes the verdict
	// malicious.
	DefaultMaliciousQuorum = 1

	DefaultPluginTimeout = 60 * time.Second

	DefaultMaxBodySize     = 64 << 10
	DefaultMetricsListen   = "127.0.0.1:9464"
	DefaultMaxConnections  = 1024
	DefaultMaxInFlight     = 64
	DefaultWorkers         = 4
	DefaultQueueSize       = 1024
	DefaultSafetyMargin    = 2 * time.Second
	DefaultMaxArtifactSize = 64 << 20
	DefaultFetchTimeout    = 20 * time.Second
	DefaultMaxRedirects    = 5
	DefaultRetention       = 7 * 24 * time.Hour
	// DefaultRecordGrace: the marketplace's clock and ours may disagree,
	// and its redeliveries may queue behind an outage of its own; an
	// hour covers both with room.
	DefaultRecordGrace = time.Hour
	DefaultBidStrategy = BidDefault
)

// DefaultBid is the bid block's defaults: the default strategy, whose
// multipliers are 1.
func DefaultBid() Bid {
	return Bid{Strategy: DefaultBidStrategy, MinMultiplier: 1, MaxMultiplier: 1}
}

// DefaultMarketplace is a marketplace block that sets nothing but what has
// no default (listen, webhook_secret): start a hand-built config from it.
func DefaultMarketplace() Marketplace {
	return Marketplace{
		MetricsListen:       DefaultMetricsListen,
		MaxBodySize:         DefaultMaxBodySize,
		MaxConnections:      DefaultMaxConnections,
		MaxWebhooksInFlight: DefaultMaxInFlight,
		Workers:             DefaultWorkers,
		QueueSize:           DefaultQueueSize,
		SafetyMargin:        DefaultSafetyMargin,
		MaxArtifactSize:     DefaultMaxArtifactSize,
		FetchTimeout:        DefaultFetchTimeout,
		MaxRedirects:        DefaultMaxRedirects,
		Retention:           DefaultRetention,
		RecordGrace:         DefaultRecordGrace,
		Bid:                 DefaultBid(),
	}
}

// WithDefaults fills the fields of m that are zero (or less) and for which
// zero is not a setting of its own. Two are: MaxRedirects 0 means "follow
// no redirect" (a negative count is 0), and an empty MetricsListen serves
// no metrics listener. A hand-built config that wants the file's values
// for those starts from DefaultMarketplace.
func (m Marketplace) WithDefaults() Marketplace {
	setDefault(&m.MaxBodySize, DefaultMaxBodySize)
	setDefault(&m.MaxConnections, DefaultMaxConnections)
	setDefault(&m.MaxWebhooksInFlight, DefaultMaxInFlight)
	setDefault(&m.Workers, DefaultWorkers)
	setDefault(&m.QueueSize, DefaultQueueSize)
	setDefault(&m.SafetyMargin, DefaultSafetyMargin)
	setDefault(&m.MaxArtifactSize, DefaultMaxArtifactSize)
	setDefault(&m.FetchTimeout, DefaultFetchTimeout)
	setDefault(&m.Retention, DefaultRetention)
	setDefault(&m.RecordGrace, DefaultRecordGrace)
	if m.MaxRedirects < 0 {
		m.MaxRedirects = 0
	}
	if m.Bid.Strategy == "" {
		m.Bid.Strategy = DefaultBidStrategy
	}
	return m
}

func setDefault[T int | int64 | time.Duration](p *T, def T) {
	if *p <= 0 {
		*p = def
	}
}
