package scanner

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/plugins/clamav/clamd"
)

// versionCache holds clamd's last VERSION answer, so results carry engine
// and database versions without a VERSION call per scan.
type versionCache struct {
	every time.Duration
	log   hclog.Logger

	mu       sync.Mutex
	client   *clamd.Client
	v        clamd.Version
	known    bool
	fetched  time.Time
	inflight bool
}

func newVersionCache(every time.Duration, log hclog.Logger) *versionCache {
	return &versionCache{every: every, log: log}
}

// use points the cache at a (re)configured client. A new address forgets
// what the old daemon said.
func (c *versionCache) use(client *clamd.Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil || c.client.Address() != client.Address() {
		c.v, c.known, c.fetched = clamd.Version{}, false, time.Time{}
	}
	c.client = client
}

// get returns the cached version, if any.
func (c *versionCache) get() (clamd.Version, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.v, c.known
}

// getFresh returns the cached version and, when it is missing or older than
// the refresh interval, starts one background refresh.
func (c *versionCache) getFresh() (clamd.Version, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.inflight && time.Since(c.fetched) >= c.every {
		c.inflight = true
		// Stamp now, so a failing clamd is asked again only after the
		// interval, not by every scan.
		c.fetched = time.Now()
		client := c.client
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), infoVersionTimeout)
			defer cancel()
			v, err := client.Version(ctx)
			c.mu.Lock()
			defer c.mu.Unlock()
			c.inflight = false
			if err != nil {
				c.log.Debug("refresh clamd version", "error", err)
				return
			}
			c.store(client, v)
		}()
	}
	return c.v, c.known
}

// fetch asks clamd now and caches the answer.
func (c *versionCache) fetch(ctx context.Context) (clamd.Version, error) {
	c.mu.Lock()
	client := c.client
	c.mu.Unlock()
	v, err := client.Version(ctx)
	if err != nil {
		return clamd.Version{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.store(client, v)
	return v, nil
}

// store records v unless the client was replaced meanwhile; c.mu is held.
func (c *versionCache) store(client *clamd.Client, v clamd.Version) {
	if client.Address() != c.client.Address() {
		return
	}
	if c.known && (c.v.Engine != v.Engine || c.v.Database != v.Database) {
		c.log.Info("clamd version changed", "from", c.v.Raw, "to", v.Raw)
	}
	c.v, c.known, c.fetched = v, true, time.Now()
}
