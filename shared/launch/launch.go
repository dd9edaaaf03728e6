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
	// PinDir, with SHA256, is where verified copies of pinned binaries are
	// kept, in a folder named by their sha256, and run from: a directory
	// only the host's user may write (0700), which the caller creates and
	// removes. Empty: each launch copies into a directory of its own,
	// removed when it is killed.
	PinDir string
	// Relaunch, with SHA256 and PinDir, runs the verified copy already in
	// PinDir without reading Path again: a crashed plugin comes back as
	// the bytes that ran, whatever the path holds by then (a replacement
	// waiting for a swap, or one a swap refused). Without it, Path is read
	// and verified on every launch, so a swap to a file that does not
	// match the pin fails.
	Relaunch bool
}

// DefaultStartTimeout bounds how long a plugin may take to complete its
// handshake.
const DefaultStartTimeout = 10 * time.Second

// Client is a plugin process as launched by NewClient: go-plugin's client,
// and the private directory that holds the plugin's socket.
type Client struct {
	*plugin.Client
	socketDir string
	// pinDir is the launch's own directory of its pinned copy, when
	// Config.PinDir was empty.
	pinDir string
	// sha256 is the hash of the bytes executed, for a pinned launch.
	sha256 string
	// config rebuilds go-plugin's client for a retried start (see
	// Dispense).
	config func() *plugin.ClientConfig
}

// SHA256 is the sha256 of the bytes this client executes, for a pinned
// launch (the pin itself); empty when the launch was not pinned.
func (c *Client) SHA256() string { return c.sha256 }

// Kill stops the plugin process (see plugin.Client.Kill) and removes its
// socket directory and its own copy of a pinned binary.
func (c *Client) Kill() {
	c.Client.Kill()
	c.removeDirs()
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
// use to launch a plugin: gRPC only, versioned, optionally pinned (a pinned
// binary runs from a verified private copy, see Config.PinDir), over a
// socket in a private directory (AutoMTLS where there is none). A go-plugin
// Client cannot be restarted: relaunch with a new one.
func NewClient(cfg Config) (*Client, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("plugin path is empty")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	start := cfg.StartTimeout
	if start <= 0 {
		start = DefaultStartTimeout
	}
	c := &Client{}
	exe := cfg.Path
	if cfg.SHA256 == "" {
		if _, err := os.Stat(cfg.Path); err != nil {
			return nil, fmt.Errorf("plugin binary: %w", err)
		}
	} else {
		// go-plugin's SecureConfig hashes the file at the path and then
		// executes the path: a file swapped in between runs unverified.
		// Hash a private copy instead, and execute that copy.
		sum, err := hex.DecodeString(strings.TrimSpace(cfg.SHA256))
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("sha256 pin %q is not 64 hex digits", cfg.SHA256)
		}
		dir := cfg.PinDir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "microengine-pinned-"); err != nil {
				return nil, fmt.Errorf("pinned plugin directory: %w", err)
			}
			c.pinDir = dir
		}
		if exe, err = pinnedCopy(cfg.Path, hex.EncodeToString(sum), dir, cfg.Relaunch && c.pinDir == ""); err != nil {
			c.removeDirs()
			return nil, err
		}
		c.sha256 = hex.EncodeToString(sum)
	}
	if privateSocket() {
		// go-plugin's server creates its socket in this directory.
		dir, err := os.MkdirTemp("", "microengine-plugin-")
		if err != nil {
			c.removeDirs()
			return nil, fmt.Errorf("plugin socket directory: %w", err)
		}
		c.socketDir = dir
	}
	c.config = func() *plugin.ClientConfig { return clientConfig(cfg, exe, c.socketDir, logger, start) }
	c.Client = plugin.NewClient(c.config())
	return c, nil
}

func (c *Client) removeDirs() {
	for _, dir := range []string{c.socketDir, c.pinDir} {
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
	}
}

// clientConfig is go-plugin's config for one start of exe.
func clientConfig(cfg Config, exe, socketDir string, logger hclog.Logger, start time.Duration) *plugin.ClientConfig {
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), cfg.Env...), "MICROENGINE_LOG_LEVEL="+logLevelName(logger))
	if socketDir != "" {
		cmd.Env = append(cmd.Env, plugin.EnvUnixSocketDir+"="+socketDir)
	}
	return &plugin.ClientConfig{
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
}

// pinnedCopy returns a copy of the binary at path whose sha256 is want,
// in dir/want/, hashed as it is written: the file at path is opened once,
// and what it holds after that does not matter. With reuse, an existing
// copy whose bytes still hash to want is returned without reading path.
func pinnedCopy(path, want, dir string, reuse bool) (string, error) {
	if err := privateDir(dir); err != nil {
		return "", err
	}
	folder := filepath.Join(dir, want)
	exe := filepath.Join(folder, filepath.Base(path))
	if reuse {
		if got, err := FileSHA256(exe); err == nil && got == want {
			return exe, nil
		}
	}
	if err := os.MkdirAll(folder, 0o700); err != nil {
		return "", fmt.Errorf("pinned copy of %s: %w", path, err)
	}
	src, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("plugin binary: %w", err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(folder, ".copy-*")
	if err != nil {
		return "", fmt.Errorf("pinned copy of %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(tmp, h), src)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("pinned copy of %s: %w", path, err)
	}
	// go-plugin's words, so messages and the tests that read them stay.
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return "", fmt.Errorf("sha256 pin: checksums did not match: %s has sha256 %s, pinned %s", path, got, want)
	}
	if err := os.Chmod(tmp.Name(), 0o500); err != nil {
		return "", fmt.Errorf("pinned copy of %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), exe); err != nil {
		return "", fmt.Errorf("pinned copy of %s: %w", path, err)
	}
	return exe, nil
}

// privateDir checks that dir is a directory only its owner may write,
// creating it (0700) when it does not exist: a copy anyone else could
// replace would verify nothing.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pinned plugin directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("pinned plugin directory: %w", err)
	}
	if !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("pinned plugin directory %s is %s: it must be a directory only its owner may write", dir, fi.Mode())
	}
	return nil
}

// Dispense starts the plugin process (if it is not running yet) and returns
// its Scanner.
func Dispense(c *Client) (*shared.GRPCClient, error) {
	rpc, err := c.Client.Client()
	// A copy written a moment ago can still be open for writing in a
	// child that another goroutine forked in between and that has not
	// yet exec'd (Linux answers ETXTBSY): that lasts microseconds, so
	// start again, with a new go-plugin client (a failed one cannot be
	// restarted).
	for wait := time.Millisecond; errors.Is(err, syscall.ETXTBSY) && wait <= 64*time.Millisecond; wait *= 2 {
		c.Client.Kill()
		time.Sleep(wait)
		c.Client = plugin.NewClient(c.config())
		rpc, err = c.Client.Client()
	}
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
