// Package launch starts plugin binaries the way the host does: the
// go-plugin client (gRPC only, versioned, optionally pinned by sha256), a
// socket in a private directory, and a kill bounded in time. The host's
// plugin manager and the conformance suite use it; a plugin author never
// needs it (a plugin only calls shared.Serve).
package launch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/microengine/microengine/shared"
)

// Config says how to start one plugin binary.
type Config struct {
	Path string
	// SHA256, when set, pins the binary: a mismatch refuses to start it.
	SHA256 string
	Logger hclog.Logger
	// StartTimeout bounds the handshake (go-plugin's default is a minute).
	StartTimeout time.Duration
	// Env is added to the plugin's environment.
	Env []string
	// Stderr, when set, also receives the plugin's raw stderr, line by
	// line: where the Go runtime writes a crash report (see shared/crash).
	Stderr io.Writer
}

// DefaultStartTimeout bounds how long a plugin may take to complete its
// handshake.
const DefaultStartTimeout = 10 * time.Second

// Client is a plugin process as launched by NewClient: go-plugin's client,
// and the private directory that holds the plugin's socket.
type Client struct {
	*plugin.Client
	socketDir string
}

// Kill stops the plugin process (see plugin.Client.Kill) and removes its
// socket directory.
func (c *Client) Kill() {
	c.Client.Kill()
	if c.socketDir != "" {
		_ = os.RemoveAll(c.socketDir)
	}
}

// privateSocket reports whether plugins are reached over a unix socket in a
// directory of their own: everywhere but Windows, where go-plugin listens
// on TCP.
//
// Such a socket needs no TLS. The directory is the host's user's alone
// (0700), so no other user can reach the socket, which is what AutoMTLS
// guards against; and against processes of the same user TLS guards
// nothing, since they can read the host's memory, key and all (ptrace),
// or replace the plugin binary. TLS did cost: encrypting and decrypting
// every byte of content held a 200 MiB artifact's transfer to clamd at
// about two thirds of a bare client's speed on two cores.
func privateSocket() bool { return runtime.GOOS != "windows" }

// NewClient builds the go-plugin client the host (and the conformance suite)
// use to launch a plugin: gRPC only, versioned, optionally pinned, over a
// socket in a private directory (AutoMTLS where there is none). A go-plugin
// Client cannot be restarted: relaunch with a new one.
func NewClient(cfg Config) (*Client, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("plugin path is empty")
	}
	if _, err := os.Stat(cfg.Path); err != nil {
		return nil, fmt.Errorf("plugin binary: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	start := cfg.StartTimeout
	if start <= 0 {
		start = DefaultStartTimeout
	}
	cmd := exec.Command(cfg.Path)
	cmd.Env = append(append(os.Environ(), cfg.Env...), "MICROENGINE_LOG_LEVEL="+logLevelName(logger))
	cc := &plugin.ClientConfig{
		HandshakeConfig:  shared.Handshake,
		VersionedPlugins: shared.PluginSets(nil),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         !privateSocket(),
		// cmd.Env already starts from os.Environ(); without this go-plugin
		// appends it again and the host's own values would override what
		// we set for the plugin (MICROENGINE_LOG_LEVEL, cfg.Env).
		SkipHostEnv:  true,
		Stderr:       cfg.Stderr,
		Logger:       logger,
		StartTimeout: start,
		// A plugin's stray stdout and stderr lines (after the handshake)
		// land in the host's log under the plugin's name.
		SyncStdout:      logger.StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}),
		SyncStderr:      logger.StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Info}),
		GRPCDialOptions: shared.DialOptions(),
	}
	if cfg.SHA256 != "" {
		sum, err := hex.DecodeString(strings.TrimSpace(cfg.SHA256))
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("sha256 pin %q is not 64 hex digits", cfg.SHA256)
		}
		cc.SecureConfig = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	c := &Client{}
	if privateSocket() {
		// go-plugin's server creates its socket in this directory.
		dir, err := os.MkdirTemp("", "microengine-plugin-")
		if err != nil {
			return nil, fmt.Errorf("plugin socket directory: %w", err)
		}
		c.socketDir = dir
		cmd.Env = append(cmd.Env, plugin.EnvUnixSocketDir+"="+dir)
	}
	c.Client = plugin.NewClient(cc)
	return c, nil
}

// Dispense starts the plugin process (if it is not running yet) and returns
// its Scanner.
func Dispense(c *Client) (*shared.GRPCClient, error) {
	rpc, err := c.Client.Client()
	if err != nil {
		return nil, fmt.Errorf("start plugin: %w", err)
	}
	if err := c.checkSocket(); err != nil {
		c.Kill()
		return nil, err
	}
	raw, err := rpc.Dispense(shared.PluginName)
	if err != nil {
		return nil, fmt.Errorf("dispense %s: %w", shared.PluginName, err)
	}
	s, ok := raw.(*shared.GRPCClient)
	if !ok {
		return nil, fmt.Errorf("plugin dispensed %T, not a scanner", raw)
	}
	if c.socketDir != "" {
		// Used once Info says the plugin takes artifacts by reference.
		s.UseDescriptorSocket(filepath.Join(c.socketDir, shared.DescriptorSocketName))
	}
	return s, nil
}

// checkSocket refuses a plugin that listens anywhere but in its private
// directory: without TLS, a socket elsewhere may be open to other users.
// go-plugin has put it there since v1.5.
func (c *Client) checkSocket() error {
	if c.socketDir == "" {
		return nil
	}
	rc := c.ReattachConfig()
	if rc == nil || rc.Addr == nil {
		return errors.New("plugin started but gave no address")
	}
	if rc.Addr.Network() != "unix" || filepath.Dir(rc.Addr.String()) != c.socketDir {
		return fmt.Errorf("plugin listens on %s %s, not in its private directory %s (%s): build it with go-plugin v1.5 or later",
			rc.Addr.Network(), rc.Addr, c.socketDir, plugin.EnvUnixSocketDir)
	}
	return nil
}

// KillClient stops a plugin process within about twice timeout, whatever
// state it is in. go-plugin's Kill waits without limit for the process's
// pipes once it has force-killed it, so a wedged plugin must not hang the
// host (or the conformance suite): past timeout the process gets SIGKILL,
// and past another timeout the Kill call is abandoned.
func KillClient(c *Client, timeout time.Duration, logger hclog.Logger) {
	pid := 0
	if rc := c.ReattachConfig(); rc != nil {
		pid = rc.Pid
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Kill()
	}()
	select {
	case <-done:
		return
	case <-time.After(timeout):
	}
	// Exited is checked so a pid that was reaped (and may be reused) is
	// not signalled.
	if pid > 0 && !c.Exited() {
		logger.Warn("plugin did not stop in time; killing it", "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	select {
	case <-done:
	case <-time.After(timeout):
		logger.Error("plugin Kill still blocked; abandoning it", "pid", pid)
	}
}

// FileSHA256 returns the hex sha256 of a file, as used by pins.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := f.WriteTo(h); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func logLevelName(l hclog.Logger) string {
	switch {
	case l.IsTrace():
		return "trace"
	case l.IsDebug():
		return "debug"
	case l.IsInfo():
		return "info"
	case l.IsWarn():
		return "warn"
	default:
		return "error"
	}
}
