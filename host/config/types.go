// Package config decodes engine.hcl: the engine block, one plugin block per
// scanner plugin, and the marketplace block. Every fault is an
// hcl.Diagnostic with a file:line:col range.
package config

import (
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/microengine/microengine/shared"
)

// Config is a decoded engine.hcl.
type Config struct {
	// Filename is the path the config was read from; relative paths inside
	// it are resolved against its folder.
	Filename    string
	Engine      Engine
	Plugins     []Plugin
	Marketplace *Marketplace // nil when the file has no marketplace block
	// Cache is the verdict cache (the top-level cache block, or its
	// defaults).
	Cache Cache
	// Queue is where the bounty lifecycle is kept; nil when the file has
	// no queue block.
	Queue *Queue

	// Files holds the parsed sources, for printing diagnostics with snippets.
	Files map[string]*hcl.File

	// evalCtx is the context the file was decoded with; plugin bodies are
	// decoded later with the same functions (see EvalContext).
	evalCtx *hcl.EvalContext
}

// Plugin returns the plugin block named name.
func (c *Config) Plugin(name string) (Plugin, bool) {
	for _, p := range c.Plugins {
		if p.Name == name {
			return p, true
		}
	}
	return Plugin{}, false
}

// Engine is the optional engine block.
type Engine struct {
	// DataDir holds the bounty store and the admin socket. Default: "data"
	// beside the config file.
	DataDir  string
	LogLevel string // default "info"
	// Concurrency bounds the artifacts scanned at once by `scan`. Default 64.
	Concurrency int
	// Swap is SwapWatch (default: replace a plugin when its binary changes
	// on disk) or SwapReload (only on SIGHUP or `microengine reload`).
	Swap SwapMode
	// HealthInterval is how often each plugin's health is checked. Default 10s.
	HealthInterval time.Duration
	// DrainTimeout bounds how long an old plugin process may finish its
	// in-flight scans after a swap. Default 60s.
	DrainTimeout time.Duration
	// Admin is the admin endpoint: a unix socket path (default
	// DataDir/admin.sock, made absolute) or a loopback host:port.
	Admin string
	// AdminNetwork is "unix" when Admin is a socket path, "tcp" when it is
	// a host:port, so callers can net.Listen(AdminNetwork, Admin) as is.
	AdminNetwork string
	// MaliciousQuorum is how many plugins must answer malicious for the
	// engine's verdict to be malicious; fewer make it suspicious. Default 1.
	MaliciousQuorum int
}

// Plugin is one plugin "NAME" block.
type Plugin struct {
	Name string
	// Path is the plugin binary, made absolute (relative to the config file).
	Path string
	// SHA256 optionally pins the binary (lowercase hex).
	SHA256 string
	// Timeout bounds each scan. Default 60s.
	Timeout time.Duration
	// Enabled defaults to true.
	Enabled bool
	// MaxVerdict caps what this plugin alone can claim: "suspicious"
	// turns its malicious answer into suspicious unless an uncapped plugin
	// also answers malicious. Empty (or "malicious"): no cap.
	MaxVerdict shared.Verdict
	// Weight (0–1) scales the plugin's confidence; nil means 1 (a Plugin
	// built by hand keeps the default).
	Weight *float64

	// Body is the plugin's own config { } block, decoded later against the
	// schema the plugin declares, so its faults keep their file:line. Nil
	// when the block is absent.
	Body hcl.Body
	// DefRange is the `plugin "NAME"` header, where faults about the whole
	// plugin point.
	DefRange hcl.Range
	// ConfigRange is the config block's header (DefRange when absent).
	ConfigRange hcl.Range
}

// Marketplace is the marketplace block: webhooks in, assertions out.
type Marketplace struct {
	Listen string
	// WebhookSecrets: the first signs nothing (we only verify); any of them
	// verifies a delivery, so a secret can be rotated.
	WebhookSecrets []string
	TLSCert        string
	TLSKey         string
	// MetricsListen is where /metrics is served, apart from the webhook
	// port: plugin names, health and versions are nobody else's business.
	// Default "127.0.0.1:9464" (taken only if free); "off" serves none.
	MetricsListen string
	// MetricsListenSet: MetricsListen was configured, so failing to listen
	// there is an error rather than a warning.
	MetricsListenSet bool
	// MaxBodySize bounds a webhook body. Default 64 KiB: a bounty with the
	// largest metadata accepted (32 KiB) fits.
	MaxBodySize int64
	// MaxConnections bounds the webhook port's open connections (default
	// 1024); MaxWebhooksInFlight the webhooks being read and handled at
	// once (default 64). Beyond either the engine answers 503 at once, and
	// the marketplace retries: memory spent on unauthenticated input stays
	// bounded whatever a stranger sends.
	MaxConnections      int
	MaxWebhooksInFlight int
	// Workers scanning bounties at once (default 4) and the queue in front
	// of them (default 1024).
	Workers   int
	QueueSize int
	// SafetyMargin is kept free before a bounty's expiration to post the
	// answer. Default 2s.
	SafetyMargin time.Duration
	// MaxArtifactSize bounds a fetched artifact. Default 64 MiB.
	MaxArtifactSize int64
	// FetchTimeout bounds an artifact download. Default 20s.
	FetchTimeout time.Duration
	// MaxRedirects when fetching. Default 5; 0 follows none, so a config
	// built in code that wants the default starts from DefaultMarketplace.
	MaxRedirects int
	// Retention keeps answered bounties as an audit trail. Default 7 days.
	Retention time.Duration
	// RecordGrace keeps a bounty's record (what recognises a redelivery)
	// this long after its expiration. Default 1 hour, at least 1 s.
	RecordGrace time.Duration
	Bid         Bid
	Filters     []Filter
	DefRange    hcl.Range
}

// Bid is the bid strategy, as in polyswarm-client:
// bid = min×MinMultiplier + (max×MaxMultiplier − min×MinMultiplier) × confidence,
// clamped to the bounty's [min_allowed_bid, max_allowed_bid].
type Bid struct {
	// Strategy is "default", "aggressive" (min × 8), "conservative" (always
	// min) or "custom" (the multipliers below).
	Strategy BidStrategy
	// MinMultiplier and MaxMultiplier are set only with strategy "custom"
	// (both > 0); for the named strategies they are 1 and the strategy
	// name decides.
	MinMultiplier float64
	MaxMultiplier float64
}

// Filter is one filter "ACTION" block: accept/reject a bounty, or favor
// (×1.2) / penalize (×0.8) the confidence, when Field Op Value holds on the
// bounty's metadata (top-level fields such as mimetype, or metadata keys).
type Filter struct {
	Action FilterAction // accept, reject, favor, penalize
	Field  string
	Op     FilterOp // < <= == >= > contains startswith endswith regex
	// Value is always a string in the file's spelling; for < <= >= > it
	// was checked to parse as a number (strconv.ParseFloat), for regex to
	// compile (regexp.Compile).
	Value string
	Range hcl.Range
}
