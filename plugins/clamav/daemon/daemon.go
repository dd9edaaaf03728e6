// Package daemon runs the clamd that the clamav plugin manages when its
// config names a signature database (`database = "DIR"`) instead of an
// address: a child clamd with a generated clamd.conf (the limits of
// SafeLimits), a private unix socket in a folder of its own, and the
// plugin's fate — it dies with the plugin (parent-death signal), it is
// restarted with backoff when it exits, and a change in the database folder
// (freshclam dropping a new daily) is loaded with RELOAD.
//
// The state it reports (starting while signatures load, ready, reloading,
// down) is what the scanner needs to never answer benign from a clamd that
// is not ready to judge.
package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/plugins/clamav/clamd"
)

// State is where a managed clamd is in its life.
type State string

const (
	// StateStarting: the process runs and loads its signatures (0.2 s
	// with a tiny database, 10-15 s with the official one); it does not
	// answer yet.
	StateStarting State = "starting"
	// StateReady: clamd answers PING.
	StateReady State = "ready"
	// StateReloading: RELOAD was sent and the new database is not in
	// place yet; clamd still scans on the old one.
	StateReloading State = "reloading"
	// StateDown: clamd exited, or could not be started; it is restarted
	// after a backoff.
	StateDown State = "down"
	// StateStopped: Close was called.
	StateStopped State = "stopped"
)

// Defaults and tuning.
const (
	// DefaultWatchInterval is how often the database folder is looked at
	// for changes. freshclam updates a few times a day; a few seconds of
	// delay cost nothing, and the look is a directory listing.
	DefaultWatchInterval = 5 * time.Second
	// readyPoll is how often PING is tried while clamd starts.
	readyPoll = 50 * time.Millisecond
	// backoffMin and backoffMax bound the pause before a restart; the
	// pause doubles with each exit that came soon after a start.
	backoffMin = 250 * time.Millisecond
	backoffMax = 30 * time.Second
	// stableAfter: a clamd that ran this long before exiting restarts
	// after backoffMin again.
	stableAfter = time.Minute
	// reloadTimeout: a reload that has not finished by then (clamd never
	// logged the new database's activation) is finished by a restart.
	reloadTimeout = 5 * time.Minute
	// DefaultStopGrace is how long Close waits after SIGTERM before
	// SIGKILL.
	DefaultStopGrace = 5 * time.Second
	// maxSocketPath is the usable length of a unix socket path.
	maxSocketPath = 100
	// logTailLines is how many of clamd's last log lines are kept for
	// error messages.
	logTailLines = 20
	// workDirPrefix names the folders of managed clamds under the temp
	// folder; a folder whose plugin is gone is removed by the next start.
	workDirPrefix = "microengine-clamd-"
)

// reloadDoneLine is the log line with which clamd 1.4.6 (with
// ConcurrentDatabaseReload yes, our setting) swaps in a reloaded database.
// Its "Database correctly reloaded" comes before, while scans still run on
// the old one.
const reloadDoneLine = "Activating the newly loaded database"

// Options configure a managed clamd.
type Options struct {
	// Database is the DatabaseDirectory: the operator's freshclam folder
	// (/var/lib/clamav) or any folder of .cvd/.cld/.hdb/.ndb... files.
	Database string
	// Clamd is the clamd binary; empty means "clamd" on PATH, or
	// /usr/sbin/clamd.
	Clamd string
	// StreamMaxLength is clamd's INSTREAM cap in bytes.
	StreamMaxLength int64
	// MaxThreads is clamd's scanning thread count.
	MaxThreads int
	// WatchInterval is how often Database is checked for changes; 0 means
	// DefaultWatchInterval.
	WatchInterval time.Duration
	// StopGrace is how long Close lets clamd finish its scans after
	// SIGTERM before SIGKILL; 0 means DefaultStopGrace.
	StopGrace time.Duration
	Logger    hclog.Logger
}

// Status is a managed clamd's state as last seen.
type Status struct {
	State State
	// Since is when the state began.
	Since time.Time
	Pid   int
	// Restarts counts the times clamd was started again after exiting.
	Restarts int
	// WasReady is set once clamd has answered PING: a clamd that has
	// never been ready exits on its configuration or its database, and
	// restarting it will not help.
	WasReady bool
	// Err says why clamd is down, or what the last failure was.
	Err string
}

// Daemon is a managed clamd. Its methods are safe for concurrent use.
type Daemon struct {
	opts       Options
	log        hclog.Logger
	bin        string
	dir        string
	socket     string
	configPath string
	// dbDir is what clamd loads: links to Database's files and the
	// evasion signatures (see linkDatabase).
	dbDir  string
	client *clamd.Client

	mu      sync.Mutex
	status  Status
	changed chan struct{} // closed and replaced on every state change
	tail    []string      // clamd's last log lines

	stop chan struct{}
	done chan struct{}
}

// ErrCannotStart means clamd exited before it was ever ready: its database
// or its configuration is at fault (see the error's text, which quotes
// clamd).
var ErrCannotStart = errors.New("clamd exited before it was ready")

// ErrNotInstalled means no clamd binary was found.
var ErrNotInstalled = errors.New("clamd is not installed (install it with: apt-get install -y clamav-daemon)")

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

// Start checks the options, writes clamd's config in a new private folder
// and starts supervising clamd; it does not wait for clamd to be ready
// (see WaitReady). Close stops clamd and removes the folder.
func Start(opts Options) (_ *Daemon, err error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.WatchInterval <= 0 {
		opts.WatchInterval = DefaultWatchInterval
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = DefaultStopGrace
	}
	if opts.MaxThreads <= 0 {
		opts.MaxThreads = 10
	}
	if opts.StreamMaxLength <= 0 {
		opts.StreamMaxLength = 25 << 20
	}
	bin := opts.Clamd
	if bin == "" {
		if bin, err = FindClamd(); err != nil {
			return nil, err
		}
	}
	if opts.Database, err = filepath.Abs(opts.Database); err != nil {
		return nil, fmt.Errorf("signature database folder: %w", err)
	}
	if err := CheckDatabase(opts.Database); err != nil {
		return nil, err
	}
	sweepStale(opts.Logger)
	dir, err := os.MkdirTemp("", workDirPrefix)
	if err == nil && len(filepath.Join(dir, "clamd.sock")) > maxSocketPath {
		// A long TMPDIR: the socket would not fit in sun_path.
		os.RemoveAll(dir)
		dir, err = os.MkdirTemp("/tmp", workDirPrefix)
	}
	if err != nil {
		return nil, fmt.Errorf("create the managed clamd's folder: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("create the managed clamd's folder: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return nil, fmt.Errorf("create the managed clamd's folder: %w", err)
	}
	d := &Daemon{
		opts: opts, log: opts.Logger, bin: bin, dir: dir,
		socket:     filepath.Join(dir, "clamd.sock"),
		configPath: filepath.Join(dir, "clamd.conf"),
		changed:    make(chan struct{}),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	d.dbDir = filepath.Join(dir, "db")
	if err := os.Mkdir(d.dbDir, 0o700); err != nil {
		return nil, fmt.Errorf("create the managed clamd's folder: %w", err)
	}
	if err := os.WriteFile(d.configPath, renderConfig(configLines(opts, d.socket, tmp, d.dbDir)), 0o600); err != nil {
		return nil, fmt.Errorf("write clamd.conf: %w", err)
	}
	if d.client, err = clamd.NewClient(d.Address(), clamd.Options{}); err != nil {
		return nil, err
	}
	d.status = Status{State: StateStarting, Since: time.Now()}
	go d.run()
	return d, nil
}

// Address is the managed clamd's socket, as unix:///path.
func (d *Daemon) Address() string { return "unix://" + d.socket }

// ConfigPath is the generated clamd.conf.
func (d *Daemon) ConfigPath() string { return d.configPath }

// Database is the signature database folder.
func (d *Daemon) Database() string { return d.opts.Database }

// Status returns the state as last seen.
func (d *Daemon) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}

// WaitReady waits until clamd answers (ready or reloading), or ctx ends,
// or the daemon is closed.
func (d *Daemon) WaitReady(ctx context.Context) error {
	st, err := d.Wait(ctx, func(st Status) bool {
		return st.State == StateReady || st.State == StateReloading || st.State == StateStopped ||
			(st.State == StateDown && !st.WasReady)
	})
	if err != nil {
		msg := fmt.Sprintf("the managed clamd is %s", st.State)
		if st.Err != "" {
			msg += ": " + st.Err
		}
		return fmt.Errorf("%s: %w", msg, err)
	}
	switch st.State {
	case StateStopped:
		return errors.New("the managed clamd was stopped")
	case StateDown:
		return fmt.Errorf("%w: %s", ErrCannotStart, st.Err)
	}
	return nil
}

// Wait waits until the status satisfies ok, or ctx ends. It returns the
// last status seen.
func (d *Daemon) Wait(ctx context.Context, ok func(Status) bool) (Status, error) {
	for {
		d.mu.Lock()
		st, changed := d.status, d.changed
		d.mu.Unlock()
		if ok(st) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-changed:
		}
	}
}

// LogTail returns clamd's last log lines.
func (d *Daemon) LogTail() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.tail, "\n")
}

// Close stops clamd (SIGTERM, then SIGKILL after Options.StopGrace) and
// removes its folder. It is safe to call more than once.
func (d *Daemon) Close() error {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
	return nil
}

func (d *Daemon) setState(s State, errMsg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.status.State == s && d.status.Err == errMsg {
		return
	}
	d.status.State, d.status.Since, d.status.Err = s, time.Now(), errMsg
	close(d.changed)
	d.changed = make(chan struct{})
}

// run supervises clamd until Close: start, wait for PING, watch the
// database, restart after an exit.
func (d *Daemon) run() {
	defer close(d.done)
	defer os.RemoveAll(d.dir)
	backoff := backoffMin
	for first := true; ; first = false {
		if !first {
			d.mu.Lock()
			d.status.Restarts++
			d.mu.Unlock()
		}
		started := time.Now()
		stopped := d.runOnce()
		if stopped {
			d.setState(StateStopped, "")
			return
		}
		if time.Since(started) > stableAfter {
			backoff = backoffMin
		}
		t := time.NewTimer(backoff)
		select {
		case <-d.stop:
			t.Stop()
			d.setState(StateStopped, "")
			return
		case <-t.C:
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// runOnce runs one clamd process to its end. It reports whether it ended
// because of Close.
func (d *Daemon) runOnce() (stopped bool) {
	d.setState(StateStarting, "")
	// The fingerprint taken before the start is what this process loads.
	loaded, _ := fingerprint(d.opts.Database)
	if err := linkDatabase(d.opts.Database, d.dbDir); err != nil {
		d.log.Error("cannot start the managed clamd", "error", err)
		d.setState(StateDown, err.Error())
		return false
	}
	proc, err := d.startProcess()
	if err != nil {
		d.log.Error("cannot start the managed clamd", "error", err)
		d.setState(StateDown, err.Error())
		return false
	}
	d.mu.Lock()
	d.status.Pid = proc.pid
	d.mu.Unlock()
	d.log.Info("managed clamd started", "pid", proc.pid, "database", d.opts.Database, "config", d.configPath)

	poll := time.NewTicker(readyPoll)
	defer poll.Stop()
	watch := time.NewTicker(d.opts.WatchInterval)
	defer watch.Stop()
	var reloadSent time.Time
	for {
		select {
		case <-d.stop:
			proc.stop(d.opts.StopGrace)
			return true
		case <-proc.exited:
			msg := fmt.Sprintf("clamd (pid %d) exited: %v", proc.pid, proc.err)
			if tail := d.lastLines(3); tail != "" {
				msg += "; its last lines: " + tail
			}
			if st := d.Status(); st.State != StateStarting {
				d.log.Warn("managed clamd exited; it will be restarted", "pid", proc.pid, "error", proc.err, "log", d.lastLines(5))
			} else {
				// Before it was ready: the state's error says it, once, in
				// health (or Configure's refusal).
				d.log.Debug("managed clamd exited before it was ready", "pid", proc.pid, "error", proc.err)
			}
			d.setState(StateDown, msg)
			return false
		case <-proc.reloaded:
			if d.Status().State == StateReloading {
				d.log.Info("managed clamd reloaded its database", "database", d.opts.Database)
				d.setState(StateReady, "")
			}
		case <-poll.C:
			if d.Status().State != StateStarting {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := d.client.Ping(ctx)
			cancel()
			if err == nil {
				d.log.Info("managed clamd is ready", "pid", proc.pid, "load_time", time.Since(d.Status().Since).Round(time.Millisecond))
				d.mu.Lock()
				d.status.WasReady = true
				d.mu.Unlock()
				d.setState(StateReady, "")
			}
		case <-watch.C:
			st := d.Status()
			if st.State == StateReloading && time.Since(reloadSent) > reloadTimeout {
				d.log.Warn("managed clamd did not finish its reload; restarting it", "after", reloadTimeout)
				proc.stop(d.opts.StopGrace)
				<-proc.exited
				d.setState(StateDown, "a reload did not finish in "+reloadTimeout.String())
				return false
			}
			if st.State != StateReady {
				continue
			}
			now, err := fingerprint(d.opts.Database)
			if err != nil || now == loaded {
				continue
			}
			if err := CheckDatabase(d.opts.Database); err != nil {
				// Mid-update, or emptied: clamd would fail to load it.
				d.log.Warn("database folder changed but cannot be loaded; keeping the loaded signatures", "error", err)
				continue
			}
			if err := linkDatabase(d.opts.Database, d.dbDir); err != nil {
				d.log.Warn("database folder changed but cannot be linked; keeping the loaded signatures", "error", err)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err = d.client.Reload(ctx)
			cancel()
			if err != nil {
				d.log.Warn("managed clamd refused RELOAD", "error", err)
				continue
			}
			loaded, reloadSent = now, time.Now()
			d.log.Info("database folder changed; managed clamd reloads it", "database", d.opts.Database)
			d.setState(StateReloading, "")
		}
	}
}

// process is one running clamd.
type process struct {
	cmd    *exec.Cmd
	pid    int
	exited chan struct{} // closed when the process has exited; err is then set
	err    error
	// reloaded receives when clamd logs that a new database is in use.
	reloaded chan struct{}
}

func (p *process) stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (d *Daemon) startProcess() (*process, error) {
	// A socket left by a killed clamd makes a new one refuse to start
	// (FixStaleSocket covers most cases; this covers the rest).
	_ = os.Remove(d.socket)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start clamd: %w", err)
	}
	cmd := exec.Command(d.bin, "--config-file="+d.configPath)
	cmd.Dir = d.dir
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = sysProcAttr()
	p := &process{cmd: cmd, exited: make(chan struct{}), reloaded: make(chan struct{}, 1)}
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		d.readLog(pr, p)
	}()
	err = startAndWait(cmd, func(err error) {
		pw.Close()
		<-logged // every line read before the exit is reported
		pr.Close()
		p.err = err
		close(p.exited)
	})
	if err != nil {
		pw.Close()
		pr.Close()
		return nil, fmt.Errorf("start %s: %w", d.bin, err)
	}
	p.pid = cmd.Process.Pid
	return p, nil
}

// readLog relays clamd's log lines at debug level (warnings and errors at
// warn), keeps the last ones for error messages, and reports a finished
// reload.
func (d *Daemon) readLog(r io.Reader, p *process) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		d.mu.Lock()
		d.tail = append(d.tail, line)
		if len(d.tail) > logTailLines {
			d.tail = d.tail[len(d.tail)-logTailLines:]
		}
		d.mu.Unlock()
		// At debug level: what matters reaches the operator once, in the
		// state's error (the last lines, when clamd exits).
		d.log.Debug("clamd: " + line)
		if strings.HasPrefix(line, reloadDoneLine) {
			select {
			case p.reloaded <- struct{}{}:
			default:
			}
		}
	}
	// Drain whatever is left, so clamd never blocks on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

func (d *Daemon) lastLines(n int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.tail
	if len(t) > n {
		t = t[len(t)-n:]
	}
	return strings.Join(t, " | ")
}

// sweepStale removes the folders of managed clamds whose plugin is gone
// (killed with SIGKILL, it had no chance to): their clamd died with it.
func sweepStale(log hclog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), workDirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		if err := os.RemoveAll(dir); err == nil {
			log.Debug("removed a stale managed clamd folder", "folder", dir)
		}
	}
}
