package pluginmgr

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/crash"
	pluginlaunch "github.com/microengine/microengine/shared/launch"
)

// instance is one plugin process. A go-plugin Client cannot be restarted, so
// every relaunch or swap makes a new instance.
type instance struct {
	client  *pluginlaunch.Client
	scanner *shared.GRPCClient
	pid     int
	sha256  string
	path    string
	started time.Time
	// configJSON is what the process was configured with, to tell whether
	// a reload changes it.
	configJSON []byte
	// identity is the slot's Identity while this process serves: set once
	// at launch, as the engine asks for it twice per artifact.
	identity string
	// crash records the Go runtime's report if the process dies of a panic.
	crash *crash.Recorder
	// isolated is set while a scan retried after a crash runs alone on this
	// process: if the process dies then, that artifact killed it.
	isolated atomic.Bool

	mu       sync.Mutex
	info     shared.Info
	health   shared.Health
	inflight int
	retiring bool
	drained  chan struct{} // closed when retiring and inflight reaches 0
}

// launchSpec is everything needed to start and configure one process.
type launchSpec struct {
	name   string
	path   string
	sha256 string
	// pinDir keeps verified copies of pinned binaries (the manager's).
	pinDir string
	// digestDir remembers unpinned binaries' digests (Options.DigestDir).
	digestDir string
	// relaunch brings a crashed plugin back: a pinned one from its
	// verified copy, without reading the path again.
	relaunch bool
	// decodeConfig turns the plugin's config block into JSON against the
	// schema the plugin declares; faults keep their file:line.
	decodeConfig func(schema []shared.ConfigField) ([]byte, hcl.Diagnostics)
	// fieldDiags points a plugin's own config faults at file:line.
	fieldDiags   func(ce *shared.ConfigError) hcl.Diagnostics
	startTimeout time.Duration
	// callTimeout bounds Info and Health, each on its own clock.
	callTimeout time.Duration
	logger      hclog.Logger
}

// ConfigError marks a launch that failed because of the plugin's config
// block (found by the host or by the plugin): a config fault, not a broken
// binary. Diags point at file:line.
type ConfigError struct{ Diags hcl.Diagnostics }

func (e *ConfigError) Error() string { return e.Diags.Error() }

// launch starts a plugin process, configures it and checks its health. On
// any failure the process is killed.
func launch(ctx context.Context, spec launchSpec, requireHealthy bool) (*instance, error) {
	// A pinned launch runs a verified copy of the pinned bytes, whatever
	// the path holds by then; an unpinned one is hashed for the status and
	// the verdict cache's key (or its digest remembered in
	// Options.DigestDir is taken). That hash runs beside the start, which
	// mostly waits on the plugin (exec, handshake, Info, Configure,
	// Health): hashing a 20 MB plugin first held a cold `microengine
	// scan` back by 15-50 ms on a loaded 2-core machine.
	sum := spec.sha256
	var hashed chan hashResult
	if sum == "" {
		hashed = make(chan hashResult, 1)
		go func() {
			var r hashResult
			r.sum, r.err = pluginlaunch.RememberedFileSHA256(spec.path, spec.digestDir)
			hashed <- r
		}()
	}
	rec := &crash.Recorder{}
	client, err := pluginlaunch.NewClient(pluginlaunch.Config{
		Path: spec.path, SHA256: spec.sha256, PinDir: spec.pinDir, Relaunch: spec.relaunch,
		Logger: spec.logger, StartTimeout: spec.startTimeout,
		Stderr: rec,
	})
	if err != nil {
		if hashed != nil {
			<-hashed
		}
		return nil, err
	}
	if pinned := client.SHA256(); pinned != "" {
		sum = pinned // lowercase, as FileSHA256 gives it
	}
	inst := &instance{client: client, sha256: sum, path: spec.path, crash: rec, drained: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			pluginlaunch.KillClient(client, defaultKillTimeout, spec.logger)
		}
	}()
	scanner, err := pluginlaunch.Dispense(client)
	if err != nil {
		return nil, err
	}
	inst.scanner = scanner
	if rc := client.ReattachConfig(); rc != nil {
		inst.pid = rc.Pid
	}
	inst.started = time.Now()

	infoCtx, infoCancel := context.WithTimeout(ctx, spec.callTimeout)
	defer infoCancel()
	info, err := scanner.Info(infoCtx)
	if err != nil {
		return nil, inst.startErr(ctx, "Info", err)
	}
	if info.Name == "" || info.Version == "" {
		return nil, fmt.Errorf("info: plugin did not give its name and version")
	}
	var configJSON []byte
	if spec.decodeConfig != nil {
		var diags hcl.Diagnostics
		configJSON, diags = spec.decodeConfig(info.ConfigSchema)
		if diags.HasErrors() {
			return nil, &ConfigError{Diags: diags}
		}
	}
	// Configure gets a budget of its own: it may compile a large rule set
	// (the yara plugin: ~3 s for 5,000 rules on a loaded 2-core machine,
	// public collections hold more) or wait for a backend to start.
	confCtx, confCancel := context.WithTimeout(ctx, configureTimeout)
	defer confCancel()
	if err := scanner.Configure(confCtx, configJSON); err != nil {
		var ce *shared.ConfigError
		if errors.As(err, &ce) && spec.fieldDiags != nil {
			return nil, &ConfigError{Diags: spec.fieldDiags(ce)}
		}
		return nil, inst.startErr(ctx, "Configure", err)
	}
	// Health's budget starts now: Configure may have taken far longer than
	// one call's (the yara plugin compiles ~61,000 rules of four public
	// collections in 17 s on a loaded 2-core machine), and a clock started
	// before it refused such a plugin as "health: context deadline
	// exceeded" although it was ready.
	healthCtx, healthCancel := context.WithTimeout(ctx, spec.callTimeout)
	defer healthCancel()
	h, err := scanner.Health(healthCtx)
	if err != nil {
		return nil, inst.startErr(ctx, "Health", err)
	}
	if !h.Healthy {
		if requireHealthy {
			return nil, fmt.Errorf("unhealthy at start: %s", h.Message)
		}
		// A backend that is down now may come back; until it does the
		// plugin answers unknown, so it is still worth running.
		spec.logger.Warn("plugin started but reports unhealthy", "message", h.Message)
	}
	if hashed != nil {
		r := <-hashed
		if r.err != nil {
			return nil, r.err
		}
		inst.sha256 = r.sum
	}
	inst.configJSON = configJSON
	inst.identity = identityOf(inst.sha256, configJSON)
	inst.info = mergeVersions(info, h)
	inst.health = h
	ok = true
	return inst, nil
}

// hashResult is a plugin binary's sha256, hashed beside its start.
type hashResult struct {
	sum string
	err error
}

// startErr is the error of a call that failed while the process was being
// started. When the process died under it, the crash is quoted ("the
// plugin crashed in Configure: panic: … (main.go:89)"): the broken
// connection it left says nothing. err already names the call.
func (i *instance) startErr(ctx context.Context, call string, err error) error {
	if (errors.Is(err, shared.ErrPluginUnavailable) || i.client.Exited()) && i.waitExit(ctx, exitWait) {
		return &startCrashError{call: call, report: i.exitReport(), err: err}
	}
	return err
}

// startCrashError is a process that died during a call of its start.
type startCrashError struct {
	call, report string
	err          error
}

func (e *startCrashError) Error() string {
	return fmt.Sprintf("the plugin crashed in %s: %s", e.call, e.report)
}

func (e *startCrashError) Unwrap() error { return e.err }

// mergeVersions keeps Info's backend versions current with what the last
// health check saw (a signature update changes them without a restart).
func mergeVersions(info shared.Info, h shared.Health) shared.Info {
	if h.VendorVersion != "" {
		info.VendorVersion = h.VendorVersion
	}
	if h.SignaturesVersion != "" {
		info.SignaturesVersion = h.SignaturesVersion
	}
	return info
}

// acquire counts a scan in; it fails once the instance is retiring.
func (i *instance) acquire() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.retiring {
		return false
	}
	i.inflight++
	return true
}

func (i *instance) release() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.inflight--
	if i.retiring && i.inflight == 0 {
		close(i.drained)
	}
}

// retire stops new scans; the returned channel closes when in-flight scans
// have finished.
func (i *instance) retire() <-chan struct{} {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.retiring {
		i.retiring = true
		if i.inflight == 0 {
			close(i.drained)
		}
	}
	return i.drained
}

// exitReport says how the process died, for logs and scan errors: the
// runtime's crash report when it left one.
func (i *instance) exitReport() string {
	if rep, ok := i.crash.Report(); ok {
		return rep.String()
	}
	if last := i.crash.LastLine(); last != "" {
		return fmt.Sprintf("it exited without a crash report; its last line on stderr: %q", last)
	}
	return "it exited without a crash report"
}

// waitExit reports whether the process has exited, waiting up to within
// for it. After a scan fails at the transport, the error arrives before
// go-plugin has reaped the process (it first drains the process's stderr,
// where the crash report is): polling is all go-plugin offers.
func (i *instance) waitExit(ctx context.Context, within time.Duration) bool {
	if i.client.Exited() {
		return true
	}
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if i.client.Exited() {
				return true
			}
		case <-deadline.C:
			return i.client.Exited()
		case <-ctx.Done():
			return i.client.Exited()
		}
	}
}

func (i *instance) snapshot() (shared.Info, shared.Health) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.info, i.health
}

func (i *instance) setHealth(h shared.Health) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.health = h
	i.info = mergeVersions(i.info, h)
}

const (
	defaultCallTimeout = 10 * time.Second
	configureTimeout   = 2 * time.Minute
	defaultKillTimeout = 5 * time.Second
)
