package conformance

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/crash"
	"github.com/microengine/microengine/shared/launch"
)

// Check runs the checks whose id matches filter (all when nil) against
// cfg.Plugin and reports on each. The error is only for an unusable
// Config: everything the plugin does wrong is in the Report. When ctx ends
// first, the checks left are skipped and the Report is Interrupted (and
// not OK).
func Check(ctx context.Context, cfg Config, filter *regexp.Regexp) (Report, error) {
	return runSuite(ctx, cfg, filter, nil)
}

// runSuite is Check with a callback per result, so the CLI can print each
// line as its check ends.
func runSuite(ctx context.Context, cfg Config, filter *regexp.Regexp, onResult func(CheckResult)) (Report, error) {
	r, err := newRunner(cfg)
	if err != nil {
		return Report{}, err
	}
	defer r.close()
	start := time.Now()
	for _, c := range suite() {
		if filter != nil && !filter.MatchString(c.ID) {
			continue
		}
		res := r.run(ctx, c)
		if ctx.Err() != nil {
			// Skipped because of the interrupt, or cut short by it: either
			// way its result says nothing about the plugin, so it is
			// shown as skipped, never as a PASS or FAIL beside "not run".
			if res.Status != Skip {
				res.Status, res.Actual = Skip, "the suite was interrupted during this check"
			}
			r.report.interrupted(c.ID)
		}
		r.report.add(res)
		if onResult != nil {
			onResult(res)
		}
	}
	r.report.Duration = time.Since(start)
	r.report.Plugin = r.summary
	return r.report, nil
}

// Checks lists the suite's checks in the order they run.
func Checks() []CheckInfo {
	checks := suite()
	out := make([]CheckInfo, len(checks))
	for i, c := range checks {
		out[i] = c.CheckInfo
	}
	return out
}

// stage is how far a plugin session has been set up. Each stage has a
// check that owns its failure, so a plugin that cannot be set up fails
// once, on that check, and the checks that need the stage are skipped.
type stage int

const (
	stageHandshake  stage = iota // launched and dispensed: HANDSHAKE-001
	stageInfo                    // Info answered: INFO-001
	stageConfigured              // the suite's config applied: CONFIG-001
)

func (s stage) String() string {
	switch s {
	case stageHandshake:
		return "the plugin could not be launched"
	case stageInfo:
		return "Info did not answer"
	default:
		return "the plugin rejected the suite's config"
	}
}

// setupFailure is a stage that failed. It is sticky: once the plugin
// cannot be launched, relaunching it for every check would only repeat the
// failure (and its start timeout) thirty times.
type setupFailure struct {
	stage      stage
	err        error
	reportedBy string
}

// outcome fails the first check that meets the failure and skips the rest,
// citing that check.
func (f *setupFailure) outcome(checkID string) outcome {
	if f.reportedBy == "" || f.reportedBy == checkID {
		f.reportedBy = checkID
		return failf("%v", f.err)
	}
	return skipf("%s (see %s)", f.stage, f.reportedBy)
}

// launchOutcome is what the first launch taught about the handshake; the
// HANDSHAKE and STDOUT-001 checks read it.
type launchOutcome struct {
	err      error
	elapsed  time.Duration
	version  int
	protocol plugin.Protocol
}

// runner runs checks one after the other against one plugin session at a
// time, relaunching the plugin (with a new go-plugin Client: a dead one
// cannot be restarted) when a check crashed or wedged it.
type runner struct {
	cfg      Config
	sess     *session
	failures map[stage]*setupFailure
	first    *launchOutcome
	// pluginConfig is the resolved config JSON (PluginConfigFor is asked
	// once).
	pluginConfig []byte
	resolved     bool
	stdout       *stdoutCapture
	summary      PluginSummary
	report       Report
	backend      struct {
		stopped bool
		err     error
	}
	launches int
}

func newRunner(cfg Config) (*runner, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &runner{
		cfg:      cfg,
		failures: map[stage]*setupFailure{},
		stdout:   &stdoutCapture{},
		summary:  PluginSummary{Path: cfg.Plugin},
		report:   Report{Strict: cfg.Strict, OK: true},
	}
	if sum, err := launch.FileSHA256(cfg.Plugin); err == nil {
		r.summary.SHA256 = sum
	}
	return r, nil
}

func (r *runner) close() {
	r.dropSession()
}

// run runs one check and turns what happened to the plugin process into
// part of its result: a plugin that exits during a check fails that check,
// whatever the check saw, and the next check gets a fresh plugin.
func (r *runner) run(ctx context.Context, c check) (res CheckResult) {
	res = CheckResult{CheckInfo: c.CheckInfo}
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	if ctx.Err() != nil {
		res.Status, res.Actual = Skip, "the suite was interrupted"
		return res
	}
	out := r.runCheck(ctx, c)
	if s := r.sess; s != nil {
		if s.exited(ctx) {
			if !out.crashQuoted {
				out = failf("the plugin process exited during this check%s; %s", prefixed("; ", out.actual), s.crashReport())
			}
			r.dropSession()
		} else if _, tainted := s.state(); tainted != "" {
			// The plugin may be stuck on work it should have dropped; do
			// not let that leak into the next check.
			r.dropSession()
		}
	}
	res.Status, res.Actual = out.status, out.actual
	return res
}

// runCheck turns a panic in a check into a failure of that check: a bug
// in the suite must not hide the remaining results.
func (r *runner) runCheck(ctx context.Context, c check) (out outcome) {
	defer func() {
		if p := recover(); p != nil {
			out = failf("conformance suite bug: check panicked: %v", p)
		}
	}()
	return c.run(ctx, &env{r: r, id: c.ID})
}

// session returns a plugin session set up to stage st, launching one when
// there is none.
func (r *runner) session(ctx context.Context, checkID string, st stage) (*session, outcome, bool) {
	for s := stageHandshake; s <= st; s++ {
		if f := r.failures[s]; f != nil {
			return nil, f.outcome(checkID), false
		}
	}
	if r.sess == nil {
		s, err := r.launch()
		if err != nil {
			f := &setupFailure{stage: stageHandshake, err: err}
			r.failures[stageHandshake] = f
			return nil, f.outcome(checkID), false
		}
		r.sess = s
	}
	s := r.sess
	if st >= stageInfo && !s.infoOK {
		info, err := s.info(ctx)
		if err != nil {
			f := &setupFailure{stage: stageInfo, err: err}
			r.failures[stageInfo] = f
			return nil, f.outcome(checkID), false
		}
		s.pluginInfo, s.infoOK = info, true
		r.noteInfo(info)
	}
	if st >= stageConfigured && !s.configured {
		if err := r.configure(ctx, s); err != nil {
			f := &setupFailure{stage: stageConfigured, err: err}
			r.failures[stageConfigured] = f
			return nil, f.outcome(checkID), false
		}
		s.configured = true
	}
	return s, outcome{}, true
}

func (r *runner) noteInfo(info shared.Info) {
	r.summary.Name = info.Name
	r.summary.Version = info.Version
	r.summary.Vendor = info.Vendor
	r.summary.VendorVersion = info.VendorVersion
	r.summary.ArtifactTypes = info.ArtifactTypes
	r.summary.HasBackend = info.HasBackend
}

// suiteConfig returns the plugin config the suite applies, asking
// PluginConfigFor once.
func (r *runner) suiteConfig(ctx context.Context, info shared.Info) ([]byte, error) {
	if !r.resolved {
		raw := r.cfg.PluginConfig
		if r.cfg.PluginConfigFor != nil {
			var err error
			if raw, err = r.cfg.PluginConfigFor(ctx, info); err != nil {
				return nil, fmt.Errorf("build the plugin's config: %w", err)
			}
			if _, err := configObject(raw); err != nil {
				return nil, fmt.Errorf("the plugin's config: %w", err)
			}
		}
		if len(strings.TrimSpace(string(raw))) == 0 {
			raw = []byte("{}")
		}
		r.pluginConfig, r.resolved = raw, true
	}
	return r.pluginConfig, nil
}

func (r *runner) configure(ctx context.Context, s *session) error {
	raw, err := r.suiteConfig(ctx, s.pluginInfo)
	if err != nil {
		return err
	}
	if err := s.configure(ctx, "Configure(the suite's config)", raw); err != nil {
		var ce *shared.ConfigError
		if errors.As(err, &ce) {
			return fmt.Errorf("%w (give the plugin a working config: Config.PluginConfig, or -plugin-config / -config)", err)
		}
		return err
	}
	return nil
}

// launch starts the plugin exactly as the host does.
func (r *runner) launch() (*session, error) {
	r.launches++
	logs := newTailBuffer()
	s := &session{
		r:     r,
		logs:  logs,
		crash: &crash.Recorder{},
		log:   newCaptureLogger(r.cfg.LogOutput, r.cfg.LogLevel, logs, r.stdout),
	}
	client, err := launch.NewClient(launch.Config{
		Path:         r.cfg.Plugin,
		SHA256:       r.cfg.SHA256,
		Logger:       s.log,
		StartTimeout: r.cfg.StartTimeout,
		Env:          r.cfg.Env,
		Stderr:       s.crash,
	})
	if err != nil {
		return nil, fmt.Errorf("launch.NewClient: %w", err)
	}
	s.client = client
	start := time.Now()
	scanner, err := launch.Dispense(client)
	elapsed := time.Since(start)
	var outcome launchOutcome
	outcome.elapsed = elapsed
	if err == nil {
		outcome.version = client.NegotiatedVersion()
		outcome.protocol = client.Protocol()
	} else {
		outcome.err = err
	}
	if r.first == nil {
		r.first = &outcome
	}
	if err != nil {
		words := s.lastWords()
		killClient(client)
		what := "launch the plugin as the host does (launch.NewClient, launch.Dispense)"
		if r.launches > 1 {
			what = "relaunch the plugin after it exited or wedged"
		}
		return nil, &launchError{
			msg: fmt.Sprintf("%s: gave up after %s: %s%s", what, elapsed.Round(time.Millisecond), firstLine(err), words),
			err: err,
		}
	}
	rpc, err := client.Client.Client()
	if err != nil { // cannot happen after a successful Dispense; kept for safety
		killClient(client)
		return nil, fmt.Errorf("go-plugin client: %w", err)
	}
	s.rpc, s.scanner = rpc, scanner
	return s, nil
}

func (r *runner) dropSession() {
	if r.sess != nil {
		killClient(r.sess.client)
		r.sess = nil
	}
}

// killTimeout bounds Kill: go-plugin waits up to 2s for a graceful exit
// and then kills, but a wedged pipe must not hang the suite.
const killTimeout = 5 * time.Second

func killClient(c *launch.Client) {
	launch.KillClient(c, killTimeout, hclog.NewNullLogger())
}

// launchError keeps go-plugin's error for errors.Is but shows only its
// first line: the rest is go-plugin's generic advice (architecture,
// permissions, ...), which drowns the one line that matters.
type launchError struct {
	msg string
	err error
}

func (e *launchError) Error() string { return e.msg }
func (e *launchError) Unwrap() error { return e.err }

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return strings.TrimSpace(s)
}

func prefixed(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}
