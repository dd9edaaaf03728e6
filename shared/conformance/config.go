// Package conformance checks a scanner plugin binary against the plugin
// contract in package shared.
//
// It is one suite with two entry points over the same Config and the same
// check list, as kubernetes-csi's csi-test/pkg/sanity is: Run for `go test`
// (each check a subtest named by its id) and Main for the host's
// `microengine conformance` command. Check is the runner both use; it
// returns a Report.
//
// Every check has an id (HANDSHAKE-001, SCAN-002, ...) and a level, MUST or
// SHOULD, as in the OCI runtime-tools' specerror: a failure cites the
// requirement it broke, what was expected and what happened. The plugin is
// launched exactly as the host launches it (launch.NewClient and
// launch.Dispense: gRPC only, a socket in a private directory, versioned
// plugin sets, optional sha256 pin), so a plugin that passes here starts and behaves under the
// host.
package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/launch"
)

// Config says which plugin to check and how.
type Config struct {
	// Plugin is the path to the plugin binary.
	Plugin string
	// SHA256 optionally pins the binary, as engine.hcl's sha256 does.
	SHA256 string

	// PluginConfig is the plugin's config block as the host hands it over:
	// a JSON object. Empty means "{}".
	PluginConfig []byte
	// PluginConfigFor, when set, is asked for the plugin's config once the
	// plugin's Info is known (a host decoding an engine.hcl block needs
	// the plugin's ConfigSchema). It takes precedence over PluginConfig.
	PluginConfigFor func(ctx context.Context, info shared.Info) ([]byte, error)

	// Samples are checked in addition to the ones the plugin declares in
	// Info.Samples (for instance a sample matched by the signatures a
	// private backend was started with).
	Samples []shared.Sample

	// StopBackend makes the plugin's backend unreachable, for the
	// BACKEND checks. They are skipped when the plugin declares no backend
	// or when neither StopBackend nor StopBackendCommand is set. They run
	// last: nothing after them can rely on the backend.
	StopBackend func(ctx context.Context) error
	// StopBackendCommand is run (argv, no shell) when StopBackend is nil.
	StopBackendCommand []string

	// StartTimeout bounds the plugin's handshake. Default
	// launch.DefaultStartTimeout, as in the host.
	StartTimeout time.Duration
	// CallTimeout bounds each Info, Configure, Health and small Scan call.
	// Default 10s.
	CallTimeout time.Duration
	// LargeTimeout bounds the scan of the large artifact. Default 60s.
	LargeTimeout time.Duration
	// LargeSize is the size of the large artifact. Default 64 MiB.
	LargeSize int64
	// BackendTimeout bounds how long the plugin may take to notice its
	// backend is gone. Default 5s.
	BackendTimeout time.Duration

	// Strict makes SHOULD failures count as failures (Report.OK and the
	// exit code, and t.Error under Run).
	Strict bool

	// Env is added to the plugin's environment.
	Env []string
	// LogOutput receives the host-side log, including the plugin's stderr
	// lines. Default: discarded (the last lines are still quoted when the
	// plugin crashes).
	LogOutput io.Writer
	// LogLevel of that log and of the plugin (MICROENGINE_LOG_LEVEL).
	// Default info.
	LogLevel hclog.Level
}

// Defaults.
const (
	DefaultCallTimeout    = 10 * time.Second
	DefaultLargeTimeout   = 60 * time.Second
	DefaultLargeSize      = 64 << 20
	DefaultBackendTimeout = 5 * time.Second
)

// withDefaults validates cfg and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Plugin == "" {
		return c, errors.New("conformance: no plugin binary given")
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = launch.DefaultStartTimeout
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.LargeTimeout <= 0 {
		c.LargeTimeout = DefaultLargeTimeout
	}
	if c.LargeSize <= 0 {
		c.LargeSize = DefaultLargeSize
	}
	if c.BackendTimeout <= 0 {
		c.BackendTimeout = DefaultBackendTimeout
	}
	if c.LogOutput == nil {
		c.LogOutput = io.Discard
	}
	if c.LogLevel == hclog.NoLevel {
		c.LogLevel = hclog.Info
	}
	if len(bytes.TrimSpace(c.PluginConfig)) > 0 {
		if _, err := configObject(c.PluginConfig); err != nil {
			return c, fmt.Errorf("conformance: plugin config: %w", err)
		}
	}
	for i, s := range c.Samples {
		if s.Name == "" {
			return c, fmt.Errorf("conformance: sample %d has no name", i)
		}
		if _, err := shared.ParseVerdict(string(s.Verdict)); err != nil {
			return c, fmt.Errorf("conformance: sample %q: %w", s.Name, err)
		}
	}
	return c, nil
}

// stopBackend runs whichever way of stopping the backend was configured; ok
// is false when there is none.
func (c Config) stopBackend() (stop func(context.Context) error, ok bool) {
	if c.StopBackend != nil {
		return c.StopBackend, true
	}
	if len(c.StopBackendCommand) == 0 {
		return nil, false
	}
	argv := c.StopBackendCommand
	return func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("stop backend %q: %w: %s", argv, err, bytes.TrimSpace(out))
		}
		return nil
	}, true
}

// configObject parses a plugin config as a JSON object; empty is {}.
func configObject(raw []byte) (map[string]json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(raw)) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if m == nil { // the literal null
		return nil, errors.New("not a JSON object: null")
	}
	return m, nil
}

func marshalConfig(m map[string]json.RawMessage) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode plugin config: %w", err)
	}
	return b, nil
}
