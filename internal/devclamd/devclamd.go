// Package devclamd runs a private clamd as a child process for tests: its
// own config, socket, temp folder and signature database, never the system
// service and never /var/lib/clamav. (`make run` needs none: the clamav
// plugin runs its own clamd, plugins/clamav/daemon.) Its limits are the
// managed clamd's (a test there checks they agree), so tests exercise the
// clamd the project configures.
//
// It speaks just enough of clamd's protocol (PING, RELOAD) to manage the
// daemon, so that it depends on no plugin package: the host's tests use it
// too, and the host knows plugins only as binaries.
package devclamd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// InstallCommand installs clamd on the Debian machines this project runs on.
const InstallCommand = "apt-get install -y clamav-daemon"

// DefaultStreamMaxLength is Debian's StreamMaxLength (25M), so that a
// private clamd refuses what a packaged one would.
const DefaultStreamMaxLength = 25 << 20

// DefaultStartTimeout bounds the wait for the first PONG. A tiny database
// answers in ~0.2 s; the official one takes 10-15 s.
const DefaultStartTimeout = 30 * time.Second

// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// maxSocketPath is the usable length of a unix socket path (sun_path holds
// 108 bytes on Linux, NUL included).
const maxSocketPath = 100

// Options configure a private clamd. The zero value runs one on the repo's
// shipped signatures in a fresh temporary folder.
type Options struct {
	// Dir is the work folder for the config, socket, temp files and log.
	// Empty: a new temporary folder, removed by Stop.
	Dir string
	// SignatureDir is the DatabaseDirectory. Empty: the repo's
	// testdata/signatures (see RepoSignatureDir). It must hold at least one
	// database file: clamd exits on an empty one.
	SignatureDir string
	// StreamMaxLength is clamd's INSTREAM cap in bytes; 0 means
	// DefaultStreamMaxLength.
	StreamMaxLength int64
	// TCP also opens a TCP socket on 127.0.0.1 at a free port.
	TCP bool
	// MaxThreads is clamd's scanning thread count; 0 leaves clamd's default.
	MaxThreads int
	// Config holds extra clamd.conf lines ("MaxFileSize 1K"); a line
	// replaces a default with the same option name.
	Config []string
	// Clamd is the clamd binary; empty means "clamd" on PATH, or
	// /usr/sbin/clamd (which a non-root PATH often lacks).
	Clamd string
	// Log receives clamd's output; nil means DIR/clamd.log.
	Log io.Writer
	// StartTimeout bounds the wait for clamd to answer PING; 0 means
	// DefaultStartTimeout.
	StartTimeout time.Duration
}

// Daemon is a running private clamd.
type Daemon struct {
	cmd        *exec.Cmd
	dir        string
	ownsDir    bool
	socketDir  string // a short folder of our own when Dir's path is too long
	socket     string
	tcpAddr    string
	configPath string
	logPath    string
	logFile    *os.File

	done    chan struct{}
	waitErr error
	stop    sync.Once
	stopErr error
}

// ErrNotInstalled means no clamd binary was found.
var ErrNotInstalled = errors.New("clamd is not installed (install it with: " + InstallCommand + ")")

// FindClamd returns the path of the clamd binary.
func FindClamd() (string, error) {
	if p, err := exec.LookPath("clamd"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/clamd", "/usr/local/sbin/clamd"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", ErrNotInstalled
}

// Start writes a config, launches clamd in the foreground and waits until it
// answers PING. ctx bounds the start only; the daemon runs until Stop or
// Kill.
func Start(ctx context.Context, opts Options) (_ *Daemon, err error) {
	bin := opts.Clamd
	if bin == "" {
		if bin, err = FindClamd(); err != nil {
			return nil, err
		}
	}
	sigDir := opts.SignatureDir
	if sigDir == "" {
		if sigDir, err = RepoSignatureDir(); err != nil {
			return nil, err
		}
	}
	if sigDir, err = filepath.Abs(sigDir); err != nil {
		return nil, fmt.Errorf("signature folder: %w", err)
	}
	if err := checkSignatureDir(sigDir); err != nil {
		return nil, err
	}

	d := &Daemon{dir: opts.Dir, done: make(chan struct{})}
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "devclamd-"); err != nil {
			return nil, fmt.Errorf("create clamd work folder: %w", err)
		}
		d.ownsDir = true
	} else if d.dir, err = filepath.Abs(d.dir); err != nil {
		return nil, fmt.Errorf("clamd work folder: %w", err)
	}
	defer func() {
		if err != nil {
			d.cleanup()
		}
	}()
	if err := os.MkdirAll(filepath.Join(d.dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("create clamd work folder: %w", err)
	}
	d.socket = filepath.Join(d.dir, "clamd.sock")
	if len(d.socket) > maxSocketPath {
		// Test folders nest deep; a socket path over sun_path's limit
		// would make clamd fail to bind.
		if d.socketDir, err = os.MkdirTemp("", "clamd"); err != nil {
			return nil, fmt.Errorf("create clamd socket folder: %w", err)
		}
		d.socket = filepath.Join(d.socketDir, "clamd.sock")
	}
	// A socket left by a killed daemon would make clamd refuse to start.
	_ = os.Remove(d.socket)

	var tcpPort int
	if opts.TCP {
		if tcpPort, err = freePort(); err != nil {
			return nil, err
		}
		d.tcpAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tcpPort))
	}

	d.configPath = filepath.Join(d.dir, "clamd.conf")
	conf := renderConfig(configLines(opts, sigDir, d.socket, filepath.Join(d.dir, "tmp"), tcpPort))
	if err := os.WriteFile(d.configPath, conf, 0o600); err != nil {
		return nil, fmt.Errorf("write clamd config: %w", err)
	}

	var logw io.Writer = opts.Log
	d.logPath = filepath.Join(d.dir, "clamd.log")
	if logw == nil {
		if d.logFile, err = os.Create(d.logPath); err != nil {
			return nil, fmt.Errorf("create clamd log: %w", err)
		}
		logw = d.logFile
	}

	d.cmd = exec.Command(bin, "--config-file="+d.configPath)
	d.cmd.Dir = d.dir
	d.cmd.Stdout = logw
	d.cmd.Stderr = logw
	d.cmd.SysProcAttr = sysProcAttr()
	exited := func(err error) {
		d.waitErr = err
		close(d.done)
	}
	if err := startAndWait(d.cmd, exited); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}

	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	if err := d.waitReady(ctx, timeout); err != nil {
		d.Kill()
		return nil, err
	}
	return d, nil
}

// waitReady polls PING until clamd answers, exits, or time runs out.
func (d *Daemon) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		last = d.Ping(pctx)
		pcancel()
		if last == nil {
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("clamd exited during start (%v); config %s; log:\n%s", d.waitErr, d.configPath, d.LogTail(2048))
		case <-ctx.Done():
			return fmt.Errorf("clamd did not answer PING within %s: %v; log:\n%s", timeout, last, d.LogTail(2048))
		case <-tick.C:
		}
	}
}

// configLines returns clamd.conf as ordered option/value pairs: our
// defaults, then Options, with extra lines replacing same-named options.
func configLines(opts Options, sigDir, socket, tmpDir string, tcpPort int) [][2]string {
	maxLen := opts.StreamMaxLength
	if maxLen <= 0 {
		maxLen = DefaultStreamMaxLength
	}
	lines := [][2]string{
		{"Foreground", "yes"},
		{"LocalSocket", socket},
		{"LocalSocketMode", "660"},
		{"FixStaleSocket", "yes"},
		{"DatabaseDirectory", sigDir},
		{"TemporaryDirectory", tmpDir},
		// Limits hit must not read as OK: clamd then answers
		// Heuristics.Limits.Exceeded.* FOUND, which a scanner maps to unknown.
		{"AlertExceedsMax", "yes"},
		// Except an archive member over MaxFileSize, which clamd skips
		// without an alert whatever AlertExceedsMax says (1.4.6: a zip
		// holding 101 MiB of zeros and a signature answers OK under the
		// default 100M). With MaxFileSize no lower than MaxScanSize such a
		// member passes MaxScanSize first, and that alerts. The same lines
		// as the clamav plugin's managed clamd (plugins/clamav/daemon).
		{"MaxScanSize", "400M"},
		{"MaxFileSize", "400M"},
		{"PCREMaxFileSize", "400M"},
		// Encrypted content was not examined: alert, for unknown.
		{"AlertEncrypted", "yes"},
		{"AlertEncryptedArchive", "yes"},
		{"AlertEncryptedDoc", "yes"},
		{"StreamMaxLength", strconv.FormatInt(maxLen, 10)},
		// No SelfCheck reloads behind a test's back.
		{"SelfCheck", "0"},
		// No "User" line: as root clamd then stays root, and needs no
		// clamav-owned socket folder.
	}
	if tcpPort > 0 {
		lines = append(lines, [2]string{"TCPSocket", strconv.Itoa(tcpPort)}, [2]string{"TCPAddr", "127.0.0.1"})
	}
	if opts.MaxThreads > 0 {
		lines = append(lines, [2]string{"MaxThreads", strconv.Itoa(opts.MaxThreads)})
	}
	for _, l := range opts.Config {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		key, val, _ := strings.Cut(l, " ")
		replaced := false
		for i := range lines {
			if strings.EqualFold(lines[i][0], key) {
				lines[i][1] = strings.TrimSpace(val)
				replaced = true
			}
		}
		if !replaced {
			lines = append(lines, [2]string{key, strings.TrimSpace(val)})
		}
	}
	return lines
}

func renderConfig(lines [][2]string) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by devclamd: a private clamd, not the system service.\n")
	for _, l := range lines {
		fmt.Fprintf(&b, "%s %s\n", l[0], l[1])
	}
	return b.Bytes()
}

// isDatabaseFile reports whether clamd loads a file of this name from its
// DatabaseDirectory.
func isDatabaseFile(name string) bool {
	switch filepath.Ext(name) {
	case ".hdb", ".hsb", ".mdb", ".msb", ".ndb", ".ldb", ".cdb", ".fp", ".sfp",
		".ign", ".ign2", ".idb", ".cvd", ".cld", ".cud", ".yar", ".yara", ".pdb",
		".wdb", ".ftm", ".cfg", ".crb", ".cat", ".info":
		return true
	}
	return false
}

func checkSignatureDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("signature folder: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() && isDatabaseFile(e.Name()) {
			return nil
		}
	}
	return fmt.Errorf("signature folder %s holds no clamd database file (clamd exits on an empty database)", dir)
}

// freePort returns a port free on 127.0.0.1 from below Linux's ephemeral
// range (32768-60999 by default). clamd binds it some time after it is
// picked, and a port from the ephemeral range, as ":0" gives, may
// meanwhile become the local port of any outgoing connection on the
// machine (the tests around make thousands): clamd could then not listen
// and the test failed for nothing it checks.
func freePort() (int, error) {
	const lo, hi = 20000, 32768
	var err error
	for range 100 {
		port := lo + rand.IntN(hi-lo)
		var l net.Listener
		if l, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err != nil {
			continue // taken: another
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("find a free TCP port in [%d, %d): %w", lo, hi, err)
}

// Address is the daemon's unix socket as unix:///path.
func (d *Daemon) Address() string { return "unix://" + d.socket }

// SocketPath is the daemon's unix socket path.
func (d *Daemon) SocketPath() string { return d.socket }

// TCPAddress is tcp://127.0.0.1:PORT when Options.TCP was set, else "".
func (d *Daemon) TCPAddress() string {
	if d.tcpAddr == "" {
		return ""
	}
	return "tcp://" + d.tcpAddr
}

// Dir is the work folder.
func (d *Daemon) Dir() string { return d.dir }

// ConfigPath is the generated clamd.conf.
func (d *Daemon) ConfigPath() string { return d.configPath }

// Pid is the clamd process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Done is closed when the clamd process has exited.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// ExitErr is how clamd exited; valid once Done is closed.
func (d *Daemon) ExitErr() error {
	<-d.done
	return d.waitErr
}

// Ping sends PING and expects PONG.
func (d *Daemon) Ping(ctx context.Context) error {
	reply, err := d.command(ctx, "zPING\x00")
	if err != nil {
		return err
	}
	if reply != "PONG" {
		return fmt.Errorf("clamd PING: want PONG, got %q", reply)
	}
	return nil
}

// Reload asks clamd to reload its signature database (RELOAD), which it
// does asynchronously; poll Ping or VERSION afterwards.
func (d *Daemon) Reload(ctx context.Context) error {
	reply, err := d.command(ctx, "zRELOAD\x00")
	if err != nil {
		return err
	}
	if reply != "RELOADING" {
		return fmt.Errorf("clamd RELOAD: want RELOADING, got %q", reply)
	}
	return nil
}

func (d *Daemon) command(ctx context.Context, cmd string) (string, error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", d.socket)
	if err != nil {
		return "", fmt.Errorf("clamd %s: %w", strings.Trim(cmd, "z\x00"), err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if _, err := io.WriteString(conn, cmd); err != nil {
		return "", fmt.Errorf("clamd %s: %w", strings.Trim(cmd, "z\x00"), err)
	}
	reply, err := io.ReadAll(io.LimitReader(conn, 4096))
	if err != nil && len(reply) == 0 {
		return "", fmt.Errorf("clamd %s: %w", strings.Trim(cmd, "z\x00"), err)
	}
	r, _, _ := strings.Cut(string(reply), "\x00")
	return r, nil
}

// LogTail returns up to the last n bytes of clamd's log (when it logs to
// the default file).
func (d *Daemon) LogTail(n int) string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Stop sends SIGTERM, waits for clamd to exit (SIGKILL after a grace
// period), and removes the folders Start created. It is safe to call more
// than once and after Kill.
func (d *Daemon) Stop() error {
	d.stop.Do(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.done:
			case <-time.After(stopGrace):
				_ = d.cmd.Process.Kill()
				<-d.done
				d.stopErr = fmt.Errorf("clamd ignored SIGTERM for %s and was killed", stopGrace)
			}
		}
		d.cleanup()
	})
	return d.stopErr
}

// Kill ends clamd abruptly with SIGKILL, as a crash would, and waits for it
// to be gone. The socket file stays behind, as after a real crash; Stop
// still cleans up.
func (d *Daemon) Kill() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Kill()
	<-d.done
}

func (d *Daemon) cleanup() {
	if d.logFile != nil {
		d.logFile.Close()
	}
	if d.socketDir != "" {
		os.RemoveAll(d.socketDir)
	}
	if d.ownsDir {
		os.RemoveAll(d.dir)
	}
}

// RepoSignatureDir finds the repository's testdata/signatures by walking up
// from the working folder to the module root. Tests run in their package's
// folder and `make run` at the root, so both find it.
func RepoSignatureDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find signature folder: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			sig := filepath.Join(dir, "testdata", "signatures")
			if fi, err := os.Stat(sig); err == nil && fi.IsDir() {
				return sig, nil
			}
			return "", fmt.Errorf("module root %s has no testdata/signatures folder", dir)
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("find signature folder: no go.mod above %s", wd)
		}
	}
}
