package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/crash"
	"github.com/microengine/microengine/shared/launch"
)

// session is one running plugin process and the host's handle on it.
type session struct {
	r       *runner
	client  *launch.Client
	rpc     plugin.ClientProtocol
	scanner *shared.GRPCClient
	logs    *tailBuffer
	log     hclog.Logger
	// crash records the Go runtime's report if the process panics.
	crash *crash.Recorder

	pluginInfo shared.Info
	infoOK     bool
	configured bool

	mu sync.Mutex // guards suspect and tainted: CONCURRENCY-001 scans at once
	// suspect is set when a call failed at the transport: the process may
	// have died, and run waits a moment to find out.
	suspect bool
	// tainted is set when the plugin may be stuck (a call outlived its
	// timeout, or the plugin kept working on a cancelled scan): the next
	// check gets a fresh process.
	tainted string
}

// The call helpers below wrap every call to the plugin with its own
// timeout and name the call in the error, as Vault's dbplugin test helpers
// do, so a failure reads "Scan(eicar, 1-byte chunks) did not answer within
// 10s" rather than "context deadline exceeded".

func (s *session) info(ctx context.Context) (shared.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, s.r.cfg.CallTimeout)
	defer cancel()
	info, err := s.scanner.Info(ctx)
	return info, s.callErr(ctx, "Info()", s.r.cfg.CallTimeout, err)
}

func (s *session) health(ctx context.Context) (shared.Health, error) {
	ctx, cancel := context.WithTimeout(ctx, s.r.cfg.CallTimeout)
	defer cancel()
	h, err := s.scanner.Health(ctx)
	return h, s.callErr(ctx, "Health()", s.r.cfg.CallTimeout, err)
}

// configure returns a *shared.ConfigError (wrapped) when the plugin
// rejected the config, and other errors when the call itself failed.
func (s *session) configure(ctx context.Context, what string, raw []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.r.cfg.CallTimeout)
	defer cancel()
	err := s.scanner.Configure(ctx, raw)
	var ce *shared.ConfigError
	if errors.As(err, &ce) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.callErr(ctx, what, s.r.cfg.CallTimeout, err)
}

// ping asks go-plugin's built-in gRPC health service. Ping takes no
// context, so the timeout is applied around it.
func (s *session) ping() error {
	done := make(chan error, 1)
	go func() { done <- s.rpc.Ping() }()
	select {
	case err := <-done:
		if err != nil {
			s.markSuspect()
			return fmt.Errorf("go-plugin health check (Ping): %w", err)
		}
		return nil
	case <-time.After(s.r.cfg.CallTimeout):
		s.taint("go-plugin health check did not answer")
		return fmt.Errorf("go-plugin health check (Ping) did not answer within %s", s.r.cfg.CallTimeout)
	}
}

// scan runs one scan through sc (the session's scanner, or one with an odd
// chunk size) with the given timeout.
func (s *session) scan(ctx context.Context, what string, sc *shared.GRPCClient, a shared.Artifact, timeout time.Duration) (shared.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if sc == nil {
		sc = s.scanner
	}
	res, err := sc.Scan(ctx, a)
	return res, s.callErr(ctx, what, timeout, err)
}

// callErr names the call in err and records what the failure says about
// the plugin process.
func (s *session) callErr(ctx context.Context, what string, timeout time.Duration, err error) error {
	if err == nil {
		return nil
	}
	// The plugin's side sees the deadline (gRPC sends it along) a moment
	// before ours does and may answer DeadlineExceeded first: what counts
	// is that the call ran for its whole timeout.
	if errors.Is(err, context.DeadlineExceeded) {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < deadlineSlack {
			s.taint(what + " outlived its timeout")
			return fmt.Errorf("%s did not answer within %s: %w", what, timeout, err)
		}
	}
	if errors.Is(err, shared.ErrPluginUnavailable) {
		// The connection broke: the process may be going down; run looks.
		s.markSuspect()
	}
	return fmt.Errorf("%s: %w", what, err)
}

// deadlineSlack is how early the plugin may notice a deadline before the
// host does.
const deadlineSlack = 100 * time.Millisecond

func (s *session) taint(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.suspect = true
	if s.tainted == "" {
		s.tainted = why
	}
}

func (s *session) markSuspect() {
	s.mu.Lock()
	s.suspect = true
	s.mu.Unlock()
}

// state returns whether the session is suspect, and why it is tainted.
func (s *session) state() (suspect bool, tainted string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.suspect, s.tainted
}

// broken reports whether a call failed at the transport: a loop of scans
// stops there rather than collect the same failure thirty times.
func (s *session) broken() bool {
	suspect, _ := s.state()
	return suspect && s.client.Exited()
}

// exited reports whether the plugin process has gone. After a transport
// failure the gRPC error can arrive before go-plugin has reaped the
// process, so a suspect session is given a moment.
func (s *session) exited(ctx context.Context) bool {
	if s.client.Exited() {
		return true
	}
	if suspect, _ := s.state(); !suspect {
		return false
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if s.client.Exited() {
			return true
		}
	}
	return false
}

// crashReport says how the process died: the runtime's panic line and the
// plugin's failing frame when it left a crash report, otherwise the end of
// its log.
func (s *session) crashReport() string {
	if rep, ok := s.crash.Report(); ok {
		return rep.String()
	}
	return "it left no crash report" + s.lastWords()
}

// lastWords quotes the end of the plugin's log (its stderr, re-emitted by
// go-plugin, and go-plugin's own note of the exit status).
func (s *session) lastWords() string {
	// go-plugin logs the exit after the pipes close; give it a moment.
	time.Sleep(50 * time.Millisecond)
	lines := s.logs.Last(8)
	if len(lines) == 0 {
		return ""
	}
	return "; plugin log: " + strings.Join(lines, " | ")
}
