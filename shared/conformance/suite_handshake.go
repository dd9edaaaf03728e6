package conformance

// Checks of the handshake: HANDSHAKE-00x, STDOUT-001.

import (
	"context"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/microengine/microengine/shared"
)

func checkHandshake(ctx context.Context, e *env) outcome {
	if _, out, ok := e.session(ctx, stageHandshake); !ok {
		return out
	}
	lo := e.r.first
	return passf("dispensed in %s", lo.elapsed.Round(time.Millisecond))
}

// go-plugin's words for the failures the handshake checks tell apart.
var (
	versionMismatchRe = regexp.MustCompile(`incompatible API version with plugin\. Plugin version: (\d+), Client versions: \[([\d ]*)\]`)
	unrecognizedRe    = regexp.MustCompile(`Unrecognized remote plugin message: ([^\n]*)`)
)

const startTimeoutMsg = "timeout while waiting for plugin to start"

// firstLaunch makes sure a launch was attempted and returns how the first
// one went.
func (e *env) firstLaunch(ctx context.Context) *launchOutcome {
	if e.r.first == nil {
		_, _, _ = e.session(ctx, stageHandshake)
	}
	return e.r.first
}

func checkProtocolVersion(ctx context.Context, e *env) outcome {
	lo := e.firstLaunch(ctx)
	if lo == nil {
		return skipf("the plugin was never launched")
	}
	if lo.err != nil {
		if m := versionMismatchRe.FindStringSubmatch(lo.err.Error()); m != nil {
			return failf("the plugin serves plugin protocol version %s; the host speaks version %s (go-plugin: %v)",
				m[1], strings.TrimSpace(m[2]), lo.err)
		}
		return skipf("the handshake did not complete, so no version was negotiated (see HANDSHAKE-001)")
	}
	if lo.version != shared.ProtocolVersion || lo.protocol != plugin.ProtocolGRPC {
		return failf("negotiated protocol version %d over %s", lo.version, lo.protocol)
	}
	return passf("version %d over %s", lo.version, lo.protocol)
}

func checkStartTimeout(ctx context.Context, e *env) outcome {
	lo := e.firstLaunch(ctx)
	if lo == nil {
		return skipf("the plugin was never launched")
	}
	timeout := e.r.cfg.StartTimeout
	switch {
	case lo.err == nil:
		return passf("handshake after %s (start timeout %s)", lo.elapsed.Round(time.Millisecond), timeout)
	case strings.Contains(lo.err.Error(), startTimeoutMsg):
		// A plugin must reach shared.Serve at once: connecting to a slow
		// backend belongs in Configure or Health, not before Serve.
		return failf("no handshake line within the start timeout of %s; the host gave up after %s (%v). A plugin must call shared.Serve without delay and reach its backend later",
			timeout, lo.elapsed.Round(time.Millisecond), lo.err)
	case versionMismatchRe.MatchString(lo.err.Error()):
		return passf("a handshake line (of the wrong version) after %s", lo.elapsed.Round(time.Millisecond))
	}
	return skipf("the launch failed for another reason (see HANDSHAKE-001)")
}

func checkStdoutBeforeHandshake(ctx context.Context, e *env) outcome {
	lo := e.firstLaunch(ctx)
	if lo == nil {
		return skipf("the plugin was never launched")
	}
	if lo.err == nil || versionMismatchRe.MatchString(lo.err.Error()) {
		return passf("the first line on stdout was a handshake line")
	}
	if m := unrecognizedRe.FindStringSubmatch(lo.err.Error()); m != nil {
		return failf("the plugin wrote %q to stdout before its handshake line; go-plugin took it for the handshake and refused the plugin (Unrecognized remote plugin message). Log to stderr with shared.Logger, never to stdout", m[1])
	}
	return skipf("the launch failed for another reason (see HANDSHAKE-001)")
}
