package scanner

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/plugins/clamav/clamd"
	"github.com/microengine/microengine/plugins/clamav/daemon"
)

// Health monitoring of the clamds.
const (
	// monitorInterval is how often each clamd is sent PING in the
	// background, so that scans go only to clamds that answer: a stopped
	// clamd is left alone within about a second.
	monitorInterval = time.Second
	// pingTimeout bounds a background PING; a live clamd answers in well
	// under a millisecond.
	pingTimeout = time.Second
)

// backend is one clamd: an address from the config, or the clamd the
// plugin manages.
type backend struct {
	addr    string
	client  *clamd.Client
	managed *daemon.Daemon // nil for a clamd someone else runs
	log     hclog.Logger
	// inflight counts scans on this clamd; the least busy gets the next.
	inflight atomic.Int64

	mu        sync.Mutex
	checked   bool // at least one check finished
	up        bool
	err       string // why it is down
	version   clamd.Version
	versionOK bool
	versionAt time.Time
	pid       int          // the managed clamd's pid at the last check
	state     daemon.State // and its state
	trust     trust
	probing   bool
	// trustChanged is closed and replaced when trust changes.
	trustChanged chan struct{}
}

func newBackend(addr string, client *clamd.Client, managed *daemon.Daemon, log hclog.Logger) *backend {
	b := &backend{addr: addr, client: client, managed: managed, log: log, trustChanged: make(chan struct{})}
	if managed != nil {
		// Configured by us with SafeLimits: it alerts on what it skips.
		b.trust = trust{state: trustPassed}
	}
	return b
}

// snapshot is a backend's state as last seen.
type snapshot struct {
	addr      string
	checked   bool
	up        bool
	err       string
	version   clamd.Version
	versionOK bool
	trust     trust
	inflight  int64
	managed   daemon.Status
	isManaged bool
}

func (b *backend) snapshot() snapshot {
	b.mu.Lock()
	s := snapshot{addr: b.addr, checked: b.checked, up: b.up, err: b.err, version: b.version, versionOK: b.versionOK, trust: b.trust}
	b.mu.Unlock()
	s.inflight = b.inflight.Load()
	if b.managed != nil {
		s.managed, s.isManaged = b.managed.Status(), true
	}
	return s
}

// usable reports whether scans should go to this clamd: it answered its
// last PING, and a managed one has its signatures loaded.
func (b *backend) usable() bool {
	b.mu.Lock()
	up := b.up
	b.mu.Unlock()
	if !up {
		return false
	}
	if b.managed != nil {
		switch b.managed.Status().State {
		case daemon.StateReady, daemon.StateReloading:
		default:
			return false
		}
	}
	return true
}

// reloading reports whether the managed clamd is loading new signatures.
func (b *backend) reloading() bool {
	return b.managed != nil && b.managed.Status().State == daemon.StateReloading
}

// markDown records a failure seen by a scan, so that the next scans go
// elsewhere until a PING succeeds again. It reports whether the clamd was
// taken for up until then: the first failure of an outage is worth a
// warning, the ones after it are not.
func (b *backend) markDown(err error) (wasUp bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasUp = b.up
	b.up, b.err = false, err.Error()
	return wasUp
}

// check sends PING (and VERSION when it is due) within ctx and records the
// outcome. A clamd someone else runs that comes back is to be probed again.
func (b *backend) check(ctx context.Context) {
	if b.managed != nil {
		st := b.managed.Status()
		switch st.State {
		case daemon.StateReady, daemon.StateReloading:
		default:
			msg := string(st.State)
			if st.State == daemon.StateStarting {
				msg = fmt.Sprintf("loading its signatures (for %s)", time.Since(st.Since).Round(time.Second))
			}
			if st.Err != "" {
				msg += ": " + st.Err
			}
			b.mu.Lock()
			b.checked, b.up, b.err = true, false, msg
			b.mu.Unlock()
			return
		}
	}
	err := b.client.Ping(ctx)
	b.mu.Lock()
	wasUp, first := b.up && b.checked, !b.checked
	b.checked = true
	if err != nil {
		b.up, b.err = false, fmt.Sprintf("does not answer PING: %v", err)
		b.mu.Unlock()
		if wasUp {
			// Once per outage, not once per scan. A clamd down from the
			// start shows in the health the host reports at launch.
			if b.managed != nil {
				// Ours: it is restarted if it exits; stopped or swamped,
				// there is no line of the config to fix.
				b.log.Warn("the managed clamd does not answer (stopped or swamped); its scans are unknown until it does",
					"address", b.addr, "pid", b.managed.Status().Pid, "error", err)
			} else {
				b.log.Warn("clamd does not answer; its scans are unknown until it does. Start it, fix address, or set database to a signature folder (e.g. /var/lib/clamav) for a clamd the plugin runs itself",
					"address", b.addr, "error", err)
			}
		}
		return
	}
	if !wasUp && !first {
		b.log.Info("clamd answers again", "address", b.addr)
	}
	b.up, b.err = true, ""
	due := !b.versionOK || time.Since(b.versionAt) >= versionRefreshInterval
	if b.managed != nil {
		// A restart or the end of a reload may bring a new daily.
		if st := b.managed.Status(); st.Pid != b.pid || st.State != b.state {
			b.pid, b.state, due = st.Pid, st.State, true
		}
	}
	if b.managed == nil && !wasUp && b.trust.state != trustPending && !b.probing {
		// Back after being down: perhaps a restarted clamd, with another
		// clamd.conf. Probe it again before trusting it.
		b.setTrust(trust{state: trustPending})
	}
	b.mu.Unlock()
	if due {
		b.fetchVersion(ctx)
	}
}

// ensureProbed starts the probes when they are due and not running. They
// run on demand — from Health, which the host calls right after launch,
// and from the first OK for content that is not plain text — rather than
// from every check: a clamd that does look spends seconds of CPU on them.
func (b *backend) ensureProbed(probes func() ([]probe, error), cache *probeCache, stop <-chan struct{}) {
	if b.managed != nil {
		return
	}
	b.mu.Lock()
	start := b.trust.state == trustPending && !b.probing
	if start {
		b.probing = true
	}
	b.mu.Unlock()
	if start {
		go b.probe(probes, cache, stop)
	}
}

// fetchVersion asks VERSION and records it.
func (b *backend) fetchVersion(ctx context.Context) {
	v, err := b.client.Version(ctx)
	if err != nil {
		b.log.Debug("clamd VERSION", "address", b.addr, "error", err)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.versionOK && (b.version.Engine != v.Engine || b.version.Database != v.Database) {
		b.log.Info("clamd version changed", "address", b.addr, "from", b.version.Raw, "to", v.Raw)
	}
	b.version, b.versionOK, b.versionAt = v, true, time.Now()
}

// versions returns the last VERSION seen, fetching it within ctx when none
// is known yet.
func (b *backend) versions(ctx context.Context) (clamd.Version, bool) {
	b.mu.Lock()
	v, ok := b.version, b.versionOK
	b.mu.Unlock()
	if ok {
		return v, true
	}
	b.fetchVersion(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.version, b.versionOK
}

// probe runs the probes, or takes what they found about the same clamd
// process before (see probecache.go), and records it.
func (b *backend) probe(probes func() ([]probe, error), cache *probeCache, stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var t trust
	addr := b.client.Address()
	identity := clamdIdentity(addr.Network, addr.Addr)
	if identity != "" {
		identity = "probes " + probeSetRevision + " " + identity
	}
	cached := false
	if t, cached = cache.get(identity); cached {
		b.log.Debug("probe findings of this clamd process are known", "address", b.addr, "identity", identity)
	} else if ps, err := probes(); err != nil {
		t = trust{state: trustUnknown, findings: []string{"the probes could not be built: " + err.Error()}}
	} else {
		b.inflight.Add(1)
		t = runProbes(ctx, b.client, ps)
		b.inflight.Add(-1)
		if err := cache.put(identity, t); err != nil {
			b.log.Debug("store probe findings", "error", err)
		}
	}
	if ctx.Err() != nil {
		b.mu.Lock()
		b.probing = false
		b.mu.Unlock()
		return // the configuration was replaced
	}
	switch t.state {
	case trustPassed:
		b.log.Info("clamd alerts on the content it skips: benign answers are trusted", "address", b.addr)
	case trustFailed:
		b.log.Warn("clamd answers OK for content it did not scan: archives and other containers are answered unknown, plain text stays benign",
			"address", b.addr, "findings", strings.Join(t.findings, "; "), "fix", t.fix)
	default:
		b.log.Warn("could not check whether clamd answers OK for content it did not scan: archives and other containers are answered unknown, plain text stays benign",
			"address", b.addr, "findings", strings.Join(t.findings, "; "))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	b.setTrust(t)
}

// setTrust records t; b.mu is held.
func (b *backend) setTrust(t trust) {
	b.trust = t
	close(b.trustChanged)
	b.trustChanged = make(chan struct{})
}

// settledTrust waits, within ctx, for the probes to finish, and returns
// what they found (pending when ctx ended first).
func (b *backend) settledTrust(ctx context.Context) trust {
	for {
		b.mu.Lock()
		t, changed := b.trust, b.trustChanged
		b.mu.Unlock()
		if t.state != trustPending {
			return t
		}
		select {
		case <-ctx.Done():
			return t
		case <-changed:
		}
	}
}

// currentTrust is the trust as it stands.
func (b *backend) currentTrust() trust {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.trust
}
