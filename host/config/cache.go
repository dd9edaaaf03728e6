package config

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Cache is the top-level cache block: the verdict cache. It is on by
// default, with these defaults, when the block is absent.
type Cache struct {
	// Enabled defaults to true.
	Enabled bool
	// TTL is how long a verdict is served from the cache. Default 24h.
	TTL time.Duration
	// MaxEntries bounds the number of verdicts kept. Default 1,000,000.
	MaxEntries int
	// MaxBytes bounds the memory the verdicts take (an estimate per
	// entry). Default 256 MiB.
	MaxBytes int64
	// TrustBountySHA256: a bounty whose sha256 (from the webhook) is
	// cached is answered without fetching the artifact. When false the
	// artifact is fetched and its sha256 checked first. Default true.
	TrustBountySHA256 bool
}

// Cache defaults.
const (
	DefaultCacheTTL        = 24 * time.Hour
	DefaultCacheMaxEntries = 1_000_000
	DefaultCacheMaxBytes   = 256 << 20
)

// DefaultCache is the cache configuration when engine.hcl has no cache
// block.
func DefaultCache() Cache {
	return Cache{
		Enabled: true, TTL: DefaultCacheTTL, MaxEntries: DefaultCacheMaxEntries,
		MaxBytes: DefaultCacheMaxBytes, TrustBountySHA256: true,
	}
}

var cacheSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "enabled"},
		{Name: "ttl"},
		{Name: "max_entries"},
		{Name: "max_bytes"},
		{Name: "trust_bounty_sha256"},
	},
}

func (d *decoder) decodeCache(b *hcl.Block) Cache {
	c := DefaultCache()
	if b == nil {
		return c
	}
	content, diags := b.Body.Content(cacheSchema)
	d.structural(diags, "cache")
	a := content.Attributes
	if v, st := d.boolean(a["enabled"], "cache.enabled"); st == valid {
		c.Enabled = v
	}
	if v, st := d.duration(a["ttl"], "cache.ttl", true); st == valid {
		c.TTL = v
	}
	if v, st := d.integer(a["max_entries"], "cache.max_entries", 1); st == valid {
		c.MaxEntries = v
	}
	if v, st := d.size(a["max_bytes"], "cache.max_bytes", true); st == valid {
		c.MaxBytes = v
	}
	if v, st := d.boolean(a["trust_bounty_sha256"], "cache.trust_bounty_sha256"); st == valid {
		c.TrustBountySHA256 = v
	}
	return c
}
