package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/engine"
	"github.com/microengine/microengine/host/pluginmgr"
	"github.com/microengine/microengine/host/verdictcache"
	"github.com/microengine/microengine/shared"
)

// Exit codes of `scan`, as clamdscan users expect: 1 when something was
// found, 2 when something could not be decided.
const (
	exitClean   = 0
	exitFound   = 1
	exitUnknown = 2
)

func runScan(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("scan", stderr, "scan -config FILE [-json] [-plugin NAME]... PATH... (- reads stdin)")
	var cf configFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	var only pluginNames
	fs.Var(&only, "plugin", "scan with this plugin of engine.hcl only; repeat for several (default: every enabled plugin)")
	concurrency := fs.Int("concurrency", 0, "artifacts scanned at once (default: engine.concurrency)")
	if err := fs.Parse(args); err != nil {
		return exitUnknown
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUnknown
	}
	cfg, ok := cf.load(stderr)
	if !ok {
		return exitUnknown
	}
	if err := only.apply(cfg); err != nil {
		fmt.Fprintf(stderr, "microengine scan: %v\n", err)
		return exitUnknown
	}
	log := cf.logger(cfg, stderr)
	// The verdict cache is read while the plugins start, which is mostly
	// waiting on them: a cache of 40,000 entries takes ~50 ms to load on
	// a loaded 2-core machine, as long as a plugin's start.
	cacheLoaded := make(chan *verdictcache.Cache, 1)
	go func() { cacheLoaded <- openVerdictCache(cfg, log) }()
	// So are the folders walked: 4,000 files take a few milliseconds to
	// list, time the plugins' start leaves the host idle.
	expanded := make(chan []target, 1)
	go func() { expanded <- expand(fs.Args()) }()
	mgr, diags := pluginmgr.New(ctx, cfg, log, pluginOptions(cfg))
	cache := <-cacheLoaded
	if diags.HasErrors() {
		_ = config.WriteDiagnostics(stderr, cfg.Files, diags)
		return exitUnknown
	}
	// At the end the plugins exit while the verdict cache is saved: both
	// are waits of their own (the plugin's exit, the file's rewrite).
	defer func() {
		var wg sync.WaitGroup
		wg.Go(mgr.Close)
		saveVerdictCache(cache, log)
		wg.Wait()
	}()

	n := *concurrency
	if n <= 0 {
		n = cfg.Engine.Concurrency
	}
	eng := engine.New(mgr)
	if cache != nil {
		eng.WithCache(cache, cfg.Cache.TrustBountySHA256)
	}
	s := &scanRun{eng: eng, ctx: ctx, stderr: stderr, hash: cache != nil}
	targets := <-expanded
	out := bufio.NewWriter(stdout)
	pr := &printer{outcomes: make([]*scanOutcome, len(targets)), out: out, code: exitClean}
	if *asJSON {
		pr.enc = json.NewEncoder(out)
	}
	// n workers, not a goroutine per file: thousands of goroutines that
	// each grow a stack for one scan cost more than the scan's own
	// bookkeeping for small files. Each takes the next file by a counter
	// and prints what its outcome completes (see printer): a goroutine
	// handing out files and one printing were two wakeups per file, each
	// a thread woken on two cores.
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(max(1, n), max(1, len(targets))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One hashing buffer per worker: io.Copy's own 32 KiB per
			// file was most of the host's garbage on small files. It
			// grows with the files (see hashBuffer).
			var buf []byte
			for i := int(next.Add(1) - 1); i < len(targets); i = int(next.Add(1) - 1) {
				o := s.scanOne(targets[i], &buf)
				pr.done(i, &o)
			}
		}()
	}
	wg.Wait()
	out.Flush()
	return pr.code
}

// printer prints outcomes in the order given, each as soon as it and those
// before it are done. The worker whose outcome completes a run prints it;
// one worker prints at a time, and the others only leave their outcome.
// Lines are buffered while more outcomes are ready, and written before
// waiting for the next: a write per file was one of the host's dozen
// syscalls per small file, and a user watching still sees each line as
// soon as it is known. A stdout that blocks holds the printing worker
// only: the others go on scanning.
type printer struct {
	mu       sync.Mutex
	outcomes []*scanOutcome // done and not yet printed
	next     int            // the first not printed
	printing bool
	out      *bufio.Writer
	enc      *json.Encoder // nil: text
	code     int
}

func (p *printer) done(i int, o *scanOutcome) {
	p.mu.Lock()
	p.outcomes[i] = o
	if p.printing {
		p.mu.Unlock()
		return
	}
	p.printing = true
	var run []*scanOutcome
	for {
		run = run[:0]
		for p.next < len(p.outcomes) && p.outcomes[p.next] != nil {
			run = append(run, p.outcomes[p.next])
			p.outcomes[p.next] = nil
			p.next++
		}
		if len(run) == 0 {
			p.printing = false
			p.mu.Unlock()
			return
		}
		waiting := p.next < len(p.outcomes)
		p.mu.Unlock()
		for _, o := range run {
			p.print(o)
		}
		if waiting {
			p.mu.Lock()
			idle := p.outcomes[p.next] == nil
			p.mu.Unlock()
			if idle {
				p.out.Flush()
			}
		}
		p.mu.Lock()
	}
}

// print writes one outcome and folds it into the exit code; one caller at
// a time.
func (p *printer) print(o *scanOutcome) {
	if p.enc != nil {
		_ = p.enc.Encode(o)
	} else {
		fmt.Fprintln(p.out, o.text())
	}
	switch o.Verdict {
	case shared.VerdictMalicious, shared.VerdictSuspicious:
		p.code = exitFound
	case shared.VerdictUnknown:
		if p.code == exitClean {
			p.code = exitUnknown
		}
	}
}

// pluginNames is the repeatable -plugin flag.
type pluginNames []string

func (p *pluginNames) String() string     { return strings.Join(*p, ",") }
func (p *pluginNames) Set(s string) error { *p = append(*p, s); return nil }

// apply enables the named plugins of cfg and no others. A name engine.hcl
// does not have, or has disabled, is an error. engine.malicious_quorum is
// capped at the number named: asking one plugin is asking for its verdict.
func (p pluginNames) apply(cfg *config.Config) error {
	if len(p) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, n := range p {
		want[n] = true
	}
	var names []string
	found := map[string]bool{}
	for i := range cfg.Plugins {
		pl := &cfg.Plugins[i]
		names = append(names, pl.Name)
		if !want[pl.Name] {
			pl.Enabled = false
			continue
		}
		if !pl.Enabled {
			return fmt.Errorf("-plugin %s: the plugin is disabled in engine.hcl (enabled = false)", pl.Name)
		}
		found[pl.Name] = true
	}
	for _, n := range p {
		if !found[n] {
			return fmt.Errorf("-plugin %s: engine.hcl has no such plugin (it has: %s)", n, strings.Join(names, ", "))
		}
	}
	cfg.Engine.MaliciousQuorum = min(cfg.Engine.MaliciousQuorum, len(found))
	return nil
}

type scanRun struct {
	// hash: look files up in the verdict cache by their sha256.
	hash   bool
	eng    *engine.Engine
	ctx    context.Context
	stderr io.Writer
}

// target is one thing to scan: a path, or stdin ("-"), or a path that could
// not be listed.
type target struct {
	path string
	err  error
}

// expand walks folders, as clamdscan does.
func expand(args []string) []target {
	var out []target
	stdin := false
	for _, a := range args {
		if a == "-" {
			// Read once: a second "-" read nothing, and was answered
			// OK, a benign for content no plugin saw.
			var err error
			if stdin {
				err = errors.New("stdin is named more than once; it is read once, for the first")
			}
			stdin = true
			out = append(out, target{path: a, err: err})
			continue
		}
		info, err := os.Stat(a)
		if err != nil || !info.IsDir() {
			out = append(out, target{path: a, err: err})
			continue
		}
		root := a
		if li, lerr := os.Lstat(a); lerr == nil && li.Mode()&fs.ModeSymlink != 0 {
			// A folder named through a symlink is walked, as clamdscan
			// does by default (WalkDir does not follow its root: the
			// folder printed nothing and exited 0, as if clean). The
			// trailing separator makes it follow; paths still begin
			// with the name given.
			root += string(filepath.Separator)
		}
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				out = append(out, target{path: p, err: err})
				return nil
			}
			if d.Type().IsRegular() {
				out = append(out, target{path: p})
			}
			return nil
		})
		if err != nil {
			out = append(out, target{path: a, err: err})
		}
	}
	return out
}

type scanOutcome struct {
	Path string `json:"path"`
	engine.Result
}

func (o scanOutcome) text() string {
	switch o.Verdict {
	case shared.VerdictMalicious:
		fam := o.MalwareFamily
		if fam == "" {
			fam = "Malicious"
		}
		return fmt.Sprintf("%s: %s FOUND", o.Path, fam)
	case shared.VerdictSuspicious:
		return fmt.Sprintf("%s: SUSPICIOUS", o.Path)
	case shared.VerdictBenign:
		return fmt.Sprintf("%s: OK", o.Path)
	}
	return fmt.Sprintf("%s: UNKNOWN (%s)", o.Path, strings.ReplaceAll(o.Reason, "\n", " "))
}

// scanOne scans one target; buf is the worker's hashing buffer.
func (s *scanRun) scanOne(t target, buf *[]byte) scanOutcome {
	fail := func(err error) scanOutcome {
		return scanOutcome{Path: t.path, Result: engine.Result{Verdict: shared.VerdictUnknown, Reason: err.Error(), Plugins: []engine.PluginResult{}}}
	}
	if t.err != nil {
		return fail(t.err)
	}
	f, size, sum, cleanup, err := openArtifact(s.ctx, t.path, s.hash)
	if err != nil {
		return fail(err)
	}
	defer cleanup()
	if s.hash && sum == "" && size <= maxHashedFile {
		// A failure only means no cache lookup.
		sum, _ = fileSHA256(f, size, hashBuffer(buf, size))
	}
	// The file's name reaches the plugins as the bounty's metadata would
	// carry it (YARA rules test filename and extension).
	var meta map[string]string
	if t.path != "-" {
		meta = map[string]string{"filename": filepath.Base(t.path), "filepath": t.path}
	}
	// A file opened here is read only by offset (the hash above, the
	// plugins' streams): one plugin may be handed its descriptor.
	res := s.eng.Scan(s.ctx, engine.Artifact{ID: t.path, Type: shared.ArtifactFile, Size: size, Content: f, Metadata: meta, SHA256: sum,
		OwnFile: t.path != "-"})
	return scanOutcome{Path: t.path, Result: res}
}

// openArtifact opens a file for scanning. Stdin is spooled to a temporary
// file first: every plugin reads the artifact at its own pace, so the
// content must be readable more than once, and it must not sit in memory.
// A file is passed as it is (plugins that take artifacts by reference get
// a read-only descriptor of it); stdin is spooled once, and, when hash
// (there is a verdict cache to look it up in), hashed on the way (sum), so
// it costs no second pass.
func openArtifact(ctx context.Context, path string, hash bool) (f *os.File, size int64, sum string, cleanup func(), err error) {
	if path != "-" {
		// O_NONBLOCK: opening a FIFO for reading would wait for a writer,
		// for ever (`scan FIFO` hung, SIGTERM too); it is refused below
		// as no regular file. A regular file's reads ignore the flag.
		f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, 0, "", nil, err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, "", nil, err
		}
		if !st.Mode().IsRegular() {
			f.Close()
			return nil, 0, "", nil, fmt.Errorf("%s is not a regular file", path)
		}
		// The flag has done its work: a plugin handed this descriptor
		// (engine.Artifact.OwnFile) gets it as a plain read-only open
		// (Go registers a non-blocking one with its poller, which a
		// regular file refuses: a wasted syscall in the plugin).
		if err := clearNonblock(f); err != nil {
			f.Close()
			return nil, 0, "", nil, err
		}
		return f, st.Size(), "", func() { f.Close() }, nil
	}
	return spool(ctx, os.Stdin, hash)
}

// clearNonblock clears f's O_NONBLOCK.
func clearNonblock(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		_, ferr = unix.FcntlInt(fd, unix.F_SETFL, 0)
	}); err != nil {
		return err
	}
	if ferr != nil {
		return fmt.Errorf("%s: clear O_NONBLOCK: %w", f.Name(), ferr)
	}
	return nil
}

// spool copies r to an unlinked temporary file, hashing it on the way
// when hash is set. It returns when ctx ends even if r never does: a read
// from stdin cannot be interrupted, and `scan -` with a writer that
// stays open ignored SIGTERM until the writer closed. The copy left
// behind then ends with the process.
func spool(ctx context.Context, r io.Reader, hash bool) (f *os.File, size int64, sum string, cleanup func(), err error) {
	tmp, err := os.CreateTemp("", "microengine-stdin-*")
	if err != nil {
		return nil, 0, "", nil, fmt.Errorf("spool stdin: %w", err)
	}
	os.Remove(tmp.Name()) // unlinked: gone when closed, whatever happens
	var w io.Writer = tmp
	h := sha256.New()
	if hash {
		w = io.MultiWriter(tmp, h)
	}
	type copied struct {
		n   int64
		err error
	}
	done := make(chan copied, 1)
	go func() {
		n, err := io.Copy(w, r)
		done <- copied{n, err}
	}()
	var c copied
	select {
	case c = <-done:
	case <-ctx.Done():
		// tmp stays open for the copy; it is unlinked, and goes with it.
		return nil, 0, "", nil, fmt.Errorf("spool stdin: %w", ctx.Err())
	}
	if c.err != nil {
		tmp.Close()
		return nil, 0, "", nil, fmt.Errorf("spool stdin: %w", c.err)
	}
	if hash {
		sum = hex.EncodeToString(h.Sum(nil))
	}
	return tmp, c.n, sum, func() { tmp.Close() }, nil
}
