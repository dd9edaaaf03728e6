// Package scanner is the yara plugin's Scanner: it scans each artifact with
// libyara against the configured rule set and maps the matching rules'
// meta to a marketplace verdict (see Mapping).
//
// Memory: the artifact is never held whole. An artifact the host passes by
// reference (an open read-only file) is mapped and scanned in place;
// otherwise content up to spoolBufSize is
// scanned from the buffer it was read into (it crossed the plugin boundary
// whole in one message anyway); anything longer is written to an unlinked
// spool file, mapped, and scanned in place while a trimmer keeps few of its
// pages resident (see mapping): the pages are the kernel's page cache, not
// the plugin's heap. ScanMem on a heap copy of a 200 MiB artifact held
// 222 MB of RSS; ScanMemBlocks misses patterns that straddle two blocks;
// ScanFileDescriptor kept the whole file mapped (548 MiB peak RSS for
// 512 MiB).
//
// Faults are never benign: no rules loaded, a spool file that cannot be
// written, a libyara error (scan timeout, too many matches) are unknown.
//
// Rules reload in the background (Config.ReloadInterval): a changed set is
// compiled aside and swapped in whole; a set that fails keeps the old one
// serving, and Health says so.
package scanner

/*
#include <malloc.h>
#include <yara.h>
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hillu/go-yara/v4"

	"github.com/microengine/microengine/plugins/yara/rules"
	"github.com/microengine/microengine/shared"
)

// Name is the plugin's name.
const Name = "yara"

// Version is the plugin's version; release builds set it with
// -ldflags "-X github.com/microengine/microengine/plugins/yara/scanner.Version=…".
var Version = "0.1.0"

// Vendor is the backend's name.
const Vendor = "YARA"

// LibraryVersion is the libyara this plugin was built against.
var LibraryVersion = fmt.Sprintf("%d.%d.%d", C.YR_MAJOR_VERSION, C.YR_MINOR_VERSION, C.YR_MICRO_VERSION)

// Result.Metadata keys.
const (
	MetaVendorVersion     = "vendor_version"
	MetaSignaturesVersion = "signatures_version"
	// MetaMatches is a JSON array of Match: every matching rule, with
	// the meta that decided its class.
	MetaMatches = "matches"
	// MetaMatchesOmitted counts the matches left out of MetaMatches to
	// keep the answer small (informational ones are left out first).
	MetaMatchesOmitted = "matches_omitted"
)

// The built-in self-test rule: always loaded, in a namespace of its own, so
// the plugin can vouch for a sample whatever rules it is given (the
// conformance suite scans it) and Health proves libyara answers. Its
// marker is written in hex so neither this source nor the binary holds it.
const (
	selfTestNamespace = "microengine.builtin"
	SelfTestFamily    = "MicroEngine.YARA.SelfTest"
	selfTestRule      = `rule selftest {
  meta:
    description = "the yara plugin's self-test sample"
    malware_family = "` + SelfTestFamily + `"
  strings:
    $marker = { 4D 49 43 52 4F 45 4E 47 49 4E 45 2D 59 41 52 41 2D 53 45 4C 46 54 45 53 54 2D 37 63 31 65 }
  condition:
    $marker
}`
)

// SelfTestSample is content the built-in rule flags.
func SelfTestSample() []byte {
	return []byte("a harmless file holding the yara plugin's self-test marker: MICROENGINE-YARA-" + "SELFTEST-7c1e\n")
}

// Scanner implements shared.Scanner with libyara. Call New.
type Scanner struct {
	log  hclog.Logger
	bufs *spoolBufs
	// configMu serialises Configure and reloads; scans never take it.
	configMu sync.Mutex
	// cur is nil until Configure succeeds; swapped whole, so a scan
	// finishes on the rule set it started with.
	cur atomic.Pointer[state]
	// stopWatch ends the reload loop of the current config.
	stopWatch context.CancelFunc
	reloads   reloadStatus
	workers   *scanWorkers
}

// scanWorkerCount is how many scans run on warm goroutines at once; the
// host sends a plugin 4 at a time by default.
const scanWorkerCount = 8

// state is one configuration and the rule set compiled from it.
type state struct {
	cfg     Config
	set     *rules.Set
	mapping Mapping

	// mu guards what follows: the libyara scanners over set.Rules that
	// are idle (a scanner serves one goroutine at a time: it holds
	// per-scan variables), how many scans are on the set's rules, and
	// whether a newer set replaced it. A replaced set's rules and
	// scanners are destroyed, and the C heap trimmed, as soon as its last
	// scan is over: left to Go's finalizers, which run only after garbage
	// collections that a plugin with a small Go heap seldom has, each
	// reload of four public collections (61,000 rules) kept ~250 MB
	// more: 297 MB RSS after loading, 690 MB after three reloads; now
	// 267 MB, then 283, 301 and 361 MB.
	mu       sync.Mutex
	idle     []*yara.Scanner
	active   int
	retired  bool
	released bool
}

var _ shared.Scanner = (*Scanner)(nil)

// New returns an unconfigured scanner: it answers unknown until Configure
// gives it rules.
func New(log hclog.Logger) *Scanner {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Scanner{log: log, bufs: newSpoolBufs(), workers: newScanWorkers(scanWorkerCount)}
}

func newState(cfg Config, set *rules.Set) *state {
	return &state{cfg: cfg, set: set, mapping: cfg.mapping()}
}

// enter counts a scan on st's rules; false when st was replaced (its
// rules may be gone).
func (st *state) enter() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.retired {
		return false
	}
	st.active++
	return true
}

// leave ends a scan that entered; the last one on a replaced set releases
// it.
func (st *state) leave() {
	st.mu.Lock()
	st.active--
	last := st.retired && st.active == 0
	st.mu.Unlock()
	if last {
		st.release()
	}
}

// retire marks st replaced: no scan starts on it any more, and its rules
// are released once the scans on them are over.
func (st *state) retire() {
	st.mu.Lock()
	st.retired = true
	idle := st.active == 0
	st.mu.Unlock()
	if idle {
		st.release()
	}
}

// release destroys the set's scanners and rules and gives the freed C
// heap back to the system.
func (st *state) release() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.released {
		return
	}
	st.released = true
	for _, sc := range st.idle {
		sc.Destroy()
	}
	st.idle = nil
	if st.set != nil && st.set.Rules != nil {
		st.set.Rules.Destroy()
	}
	C.malloc_trim(0)
}

func (st *state) getScanner() (*yara.Scanner, error) {
	st.mu.Lock()
	if n := len(st.idle); n > 0 {
		sc := st.idle[n-1]
		st.idle = st.idle[:n-1]
		st.mu.Unlock()
		return sc, nil
	}
	st.mu.Unlock()
	sc, err := yara.NewScanner(st.set.Rules)
	if err != nil {
		return nil, fmt.Errorf("libyara scanner: %w", err)
	}
	return sc, nil
}

func (st *state) putScanner(sc *yara.Scanner) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.idle = append(st.idle, sc)
}

func (st *state) spec() rules.Spec {
	return rules.Spec{Paths: st.cfg.Rules, Externals: st.cfg.Externals, Strict: st.cfg.Strict,
		Builtin: map[string]string{selfTestNamespace: selfTestRule}}
}

// Info describes the plugin.
func (s *Scanner) Info(context.Context) (shared.Info, error) {
	info := shared.Info{
		Name: Name, Version: Version, Vendor: Vendor, VendorVersion: LibraryVersion,
		ArtifactTypes: []shared.ArtifactType{shared.ArtifactFile},
		// Large artifacts are then mapped straight from the host's file:
		// no stream, no spool copy.
		ByReference:  true,
		ConfigSchema: ConfigSchema(),
		Samples: []shared.Sample{
			{Name: "yara-selftest.txt", Content: SelfTestSample(), Verdict: shared.VerdictMalicious, MalwareFamily: SelfTestFamily},
			{Name: "clean.txt", Content: []byte("just an ordinary text file\n"), Verdict: shared.VerdictBenign},
		},
	}
	if st := s.cur.Load(); st != nil {
		info.SignaturesVersion = st.set.Version()
	}
	return info, nil
}

// Configure loads the rules the block names. It is idempotent: the same
// block with unchanged rule files keeps the loaded set. A block that fails
// (a path that names nothing, no file that compiles, any failing file when
// strict) is refused with every fault, file:line included, and the old set
// keeps serving.
func (s *Scanner) Configure(_ context.Context, raw []byte) error {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return err
	}
	s.configMu.Lock()
	defer s.configMu.Unlock()
	cur := s.cur.Load()
	if cur != nil && cur.cfg.equal(cfg) && !s.changed(cur) {
		return nil
	}
	next := newState(cfg, nil)
	set, err := rules.Load(next.spec())
	if err != nil {
		s.logFailure(err)
		return rulesConfigError(err)
	}
	next = newState(cfg, set)
	s.cur.Store(next)
	if cur != nil {
		cur.retire()
	}
	s.logSet("rules loaded", set)
	s.reloads.reset()
	if s.stopWatch != nil {
		s.stopWatch()
		s.stopWatch = nil
	}
	if cfg.ReloadInterval > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopWatch = cancel
		go s.watch(ctx, cfg.ReloadInterval)
	}
	return nil
}

// Close stops the reload loop.
func (s *Scanner) Close() {
	s.configMu.Lock()
	defer s.configMu.Unlock()
	if s.stopWatch != nil {
		s.stopWatch()
		s.stopWatch = nil
	}
}

// rulesConfigError turns a load failure into field faults: a bad path under
// its rules[i], compile errors under "rules" (the host points at the
// attribute) with their file:line in the message. At most maxHealthErrors
// compile errors are quoted, then how many more: a strict load of a public
// collection fails with a hundred or more (Yara-Rules: 131 errors in 53
// files, 528 lines of `microengine validate` output when each was a
// diagnostic of its own). logFailure puts every one in the log.
func rulesConfigError(err error) error {
	ce := &shared.ConfigError{}
	var re *rules.Error
	if !errors.As(err, &re) {
		return ce.Add(keyRules, "%v", err)
	}
	for i, msg := range re.Paths {
		ce.Add(fmt.Sprintf("%s[%d]", keyRules, i), "%s", msg)
	}
	for _, q := range quoteErrors(re.Files) {
		ce.Add(keyRules, "%s", q)
	}
	if re.Reason != "" {
		ce.Add(keyRules, "%s", re.Reason)
	}
	return ce
}

// quoteErrors gives the first maxHealthErrors compile errors of the files,
// each at its file:line, then how many more there are.
func quoteErrors(files []rules.Skipped) []string {
	var out []string
	total := 0
	for _, f := range files {
		for _, d := range f.Errors {
			total++
			if len(out) < maxHealthErrors {
				out = append(out, d.String())
			}
		}
	}
	if total > len(out) {
		out = append(out, fmt.Sprintf("and %d more errors (%d files in all; the plugin's log has every one)", total-len(out), len(files)))
	}
	return out
}

// logFailure logs every compile error of a load that failed: messages
// quote only the first few.
func (s *Scanner) logFailure(err error) {
	var re *rules.Error
	if !errors.As(err, &re) {
		return
	}
	for _, f := range re.Files {
		for _, d := range f.Errors {
			s.log.Warn("rule file fails to compile", "error", d.String())
		}
	}
}

func (s *Scanner) logSet(msg string, set *rules.Set) {
	s.log.Info(msg, "rules", set.RuleCount, "files", len(set.Files), "skipped", len(set.Skipped), "signatures_version", set.Version())
	for _, sk := range set.Skipped {
		for _, d := range sk.Errors {
			s.log.Warn("rule file skipped", "error", d.String())
		}
	}
}

// Health reports the loaded set and proves libyara answers: the self-test
// sample must match.
func (s *Scanner) Health(ctx context.Context) (shared.Health, error) {
	st := s.cur.Load()
	h := shared.Health{VendorVersion: LibraryVersion}
	if st == nil {
		h.Message = "not configured: no rules loaded"
		return h, nil
	}
	h.SignaturesVersion = st.set.Version()
	res, err := s.scanBytes(ctx, st, SelfTestSample(), nil)
	if err != nil || res.Verdict != shared.VerdictMalicious {
		h.Message = fmt.Sprintf("self-test scan failed: %v %s", err, res.Reason)
		return h, nil
	}
	h.Message = describe(st.set)
	if n := s.reloads.count(); n > 0 {
		h.Message += fmt.Sprintf("; reloaded %d times", n)
	}
	// A reload that failed leaves the plugin scanning with the rules it
	// had, yet not with the ones on disk: unhealthy, so `microengine
	// plugins` and microengine_plugin_healthy show it until the files are
	// fixed (the host keeps sending scans to an unhealthy plugin; it does
	// not restart it).
	if f := s.reloads.failure(); f != "" {
		h.Message = f + "; " + h.Message
		return h, nil
	}
	h.Healthy = true
	return h, nil
}

// maxHealthErrors bounds the compile errors Health quotes: a public
// collection can skip hundreds of files (the log has every one).
const maxHealthErrors = 20

// describe summarises a set for Health: counts, then the skipped files'
// errors, each at its file:line.
func describe(set *rules.Set) string {
	msg := fmt.Sprintf("libyara %s: %d rules from %d files", LibraryVersion, set.RuleCount, len(set.Files))
	if len(set.Skipped) > 0 {
		msg += fmt.Sprintf("; %d files skipped: %s", len(set.Skipped), strings.Join(quoteErrors(set.Skipped), "; "))
	}
	return msg
}

// Scan scans the artifact. Only the end of ctx is returned as an error.
func (s *Scanner) Scan(ctx context.Context, a shared.Artifact) (shared.Result, error) {
	st := s.cur.Load()
	switch {
	case st == nil:
		return shared.Unknown("the yara plugin has no rules: it was not configured"), nil
	case a.Type != shared.ArtifactFile:
		return s.unknown(st, "the yara plugin scans files, not %q artifacts", a.Type), nil
	case a.File != nil && a.Size > spoolBufSize:
		return s.scanByReference(ctx, a, st)
	case a.Content == nil && a.Size != 0:
		return s.unknown(st, "not scanned: the artifact has no content (announced size %d)", a.Size), nil
	}
	bufp := s.bufs.get()
	buf := *bufp
	var n int
	var rerr error
	if a.Content != nil {
		n, rerr = io.ReadFull(a.Content, buf)
	}
	switch {
	case a.Content == nil, errors.Is(rerr, io.EOF), errors.Is(rerr, io.ErrUnexpectedEOF):
		// The whole artifact fits the buffer: scan it there. The buffer
		// goes back to the pool when libyara is done with it, which may
		// be after a cancelled call returned.
		return s.finish(ctx, a, st, int64(n), func(ctx context.Context) (shared.Result, error) {
			return s.run(ctx, st, a.Metadata, func(sc *yara.Scanner) error { return sc.ScanMem(buf[:n]) },
				func() { s.bufs.put(bufp) })
		}, func() { s.bufs.put(bufp) })
	case rerr != nil:
		s.bufs.put(bufp)
		if ctx.Err() != nil {
			return shared.Result{}, fmt.Errorf("yara: scan %s: %w", a.ID, ctx.Err())
		}
		return s.unknown(st, "not scanned: reading the artifact failed after %d bytes: %v", n, rerr), nil
	}
	f, err := openSpool(st.cfg.SpoolDir)
	if err != nil {
		s.bufs.put(bufp)
		s.log.Error("cannot spool the artifact", "artifact", a.ID, "error", err)
		return s.unknown(st, "not scanned: %v", err), nil
	}
	size, err := spoolTo(ctx, f, buf, a.Content, buf)
	s.bufs.put(bufp)
	if err != nil {
		f.Close()
		if ctx.Err() != nil {
			return shared.Result{}, fmt.Errorf("yara: scan %s: %w", a.ID, ctx.Err())
		}
		if !errors.Is(err, errContent) {
			s.log.Error("cannot spool the artifact", "artifact", a.ID, "error", err)
		}
		return s.unknown(st, "not scanned after %d bytes: %v", size, err), nil
	}
	if a.Size >= 0 && size != a.Size {
		f.Close()
		return s.unknown(st, "content held %d bytes, the artifact announced %d", size, a.Size), nil
	}
	m, err := mapFile(f, size)
	if err != nil {
		f.Close()
		s.log.Error("cannot map the spooled artifact", "artifact", a.ID, "error", err)
		return s.unknown(st, "not scanned: %v", err), nil
	}
	// The mapping and the file are released when libyara is done with
	// them, which may be after a cancelled call returned (libyara cannot
	// be interrupted; the scan timeout bounds it). Being unlinked, the
	// file's space is then freed.
	release := func() {
		m.unmap()
		f.Close()
	}
	return s.finish(ctx, a, st, size, func(ctx context.Context) (shared.Result, error) {
		return s.run(ctx, st, a.Metadata, func(sc *yara.Scanner) error { return sc.ScanMem(m.data) }, release)
	}, release)
}

// scanByReference maps the file the host passed (read-only, Size bytes)
// and scans it in place. The mapping holds its own reference to the file,
// so it outlives the descriptor, which the shim closes when Scan returns,
// even if libyara is still at work after a cancellation. Small artifacts
// take the buffer path instead (Content preads the same file): a mapping
// and its trimmer cost more than reading 256 KiB.
func (s *Scanner) scanByReference(ctx context.Context, a shared.Artifact, st *state) (shared.Result, error) {
	fi, err := a.File.Stat()
	switch {
	case err != nil:
		return s.unknown(st, "not scanned: the artifact's file: %v", err), nil
	case fi.Size() != a.Size:
		return s.unknown(st, "the artifact's file holds %d bytes, the artifact announced %d", fi.Size(), a.Size), nil
	}
	m, err := mapFile(a.File, a.Size)
	if err != nil {
		s.log.Error("cannot map the artifact", "artifact", a.ID, "error", err)
		return s.unknown(st, "not scanned: %v", err), nil
	}
	return s.finish(ctx, a, st, a.Size, func(ctx context.Context) (shared.Result, error) {
		return s.run(ctx, st, a.Metadata, func(sc *yara.Scanner) error { return sc.ScanMem(m.data) }, m.unmap)
	}, m.unmap)
}

// finish runs the scan, after checking the size, and records the bytes it saw.
// When the scan does not run, release does what the scan would have done
// when over.
func (s *Scanner) finish(ctx context.Context, a shared.Artifact, st *state, n int64,
	scan func(context.Context) (shared.Result, error), release func()) (shared.Result, error) {
	if a.Size >= 0 && n != a.Size {
		release()
		return s.unknown(st, "content held %d bytes, the artifact announced %d", n, a.Size), nil
	}
	start := time.Now()
	res, err := scan(ctx)
	if err != nil {
		return shared.Result{}, fmt.Errorf("yara: scan %s: %w", a.ID, err)
	}
	// run set the versions: of the set it scanned on, which is not st's
	// when a reload replaced st meanwhile.
	res.BytesScanned = n
	s.log.Debug("scanned", "artifact", a.ID, "bytes", n, "verdict", res.Verdict, "duration", time.Since(start))
	return res, nil
}

func (s *Scanner) unknown(st *state, format string, args ...any) shared.Result {
	r := shared.Unknown(format, args...)
	r.Metadata = map[string]string{MetaVendorVersion: LibraryVersion}
	if st != nil {
		r.Metadata[MetaSignaturesVersion] = st.set.Version()
	}
	return r
}

// collector gathers the matching rules of one scan.
type collector struct {
	mapping Mapping
	matches []Match
	// truncated names the first string whose matches libyara stopped
	// recording (see truncatedString); the scan's verdict is then unknown.
	truncated string
}

// ScanFinished records whether a string hit libyara's match limit.
func (c *collector) ScanFinished(sc *yara.ScanContext) (bool, error) {
	c.truncated = truncatedString(sc)
	return false, nil
}

func (c *collector) RuleMatching(_ *yara.ScanContext, r *yara.Rule) (bool, error) {
	c.matches = append(c.matches, c.mapping.classify(r))
	return false, nil
}

func (s *Scanner) scanBytes(ctx context.Context, st *state, b []byte, meta map[string]string) (shared.Result, error) {
	return s.run(ctx, st, meta, func(sc *yara.Scanner) error { return sc.ScanMem(b) }, nil)
}

// run scans on a pooled libyara scanner. libyara cannot be interrupted, so
// the scan runs on its own goroutine and a cancelled call returns at once;
// the scan's own timeout (ctx's deadline, rounded up to whole seconds, as
// libyara counts them) bounds the work left behind. after runs when the
// scan is over, whoever waits for it.
func (s *Scanner) run(ctx context.Context, st *state, meta map[string]string, scan func(*yara.Scanner) error, after func()) (shared.Result, error) {
	// A scan that took its set just before a reload replaced it runs on
	// the new one: the old one's rules may be gone.
	for !st.enter() {
		st = s.cur.Load()
	}
	sc, err := st.getScanner()
	if err != nil {
		st.leave()
		if after != nil {
			after()
		}
		return s.unknown(st, "not scanned: %v", err), nil
	}
	cb := &collector{mapping: st.mapping}
	sc.SetCallback(cb)
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		// Never 0: libyara reads 0 as "no limit".
		timeout = max(time.Second, time.Until(dl).Truncate(time.Second)+time.Second)
	}
	sc.SetTimeout(timeout)
	if err := defineExternals(sc, st.set.Externals, meta); err != nil {
		st.putScanner(sc)
		st.leave()
		if after != nil {
			after()
		}
		return s.unknown(st, "not scanned: %v", err), nil
	}
	done := make(chan error, 1)
	s.workers.run(func() {
		err := scan(sc)
		sc.SetCallback(nil)
		st.putScanner(sc)
		st.leave()
		if after != nil {
			after()
		}
		done <- err
	})
	select {
	case err = <-done:
	case <-ctx.Done():
		return shared.Result{}, ctx.Err()
	}
	if err != nil {
		s.log.Warn("libyara scan failed", "error", err)
		r := s.unknown(st, "libyara: %v: the artifact was not examined in full", err)
		addMatches(r.Metadata, cb.matches)
		return r, nil
	}
	if cb.truncated != "" {
		s.log.Warn("libyara: too many matches", "string", cb.truncated)
		r := s.unknown(st, "libyara: too many matches: %s matched more than %d times, the rest went unrecorded and the rules' conditions saw a truncated count", cb.truncated, MaxStringMatches)
		addMatches(r.Metadata, cb.matches)
		return r, nil
	}
	res := decide(cb.matches, st.cfg.Confidence)
	res.Metadata = map[string]string{MetaVendorVersion: LibraryVersion, MetaSignaturesVersion: st.set.Version()}
	addMatches(res.Metadata, cb.matches)
	return res, nil
}

// addMatches lists the matches in a result's metadata, and how many did
// not fit (MetaMatchesOmitted).
func addMatches(meta map[string]string, ms []Match) {
	m, omitted := matchesJSON(ms)
	if m != "" {
		meta[MetaMatches] = m
	}
	if omitted > 0 {
		meta[MetaMatchesOmitted] = strconv.Itoa(omitted)
	}
}

// defineExternals sets the per-artifact external variables: filename,
// filepath and extension from the artifact's metadata (the bounty's
// "filename", the CLI's path), filetype and owner when the metadata has
// them; the configured (or empty) value otherwise. A scanner is reused, so
// every default variable is set on every scan.
func defineExternals(sc *yara.Scanner, defaults map[string]any, meta map[string]string) error {
	name := meta["filename"]
	fpath := meta["filepath"]
	if fpath == "" {
		fpath = name
	}
	if name == "" && fpath != "" {
		name = path.Base(filepath.ToSlash(fpath))
	}
	values := map[string]string{
		"filename":  name,
		"filepath":  fpath,
		"extension": strings.ToLower(path.Ext(name)),
		"filetype":  meta["filetype"],
		"owner":     meta["owner"],
	}
	for _, k := range rules.DefaultExternals {
		var v any = values[k]
		switch d := defaults[k].(type) {
		case string:
			// The configured value (externals may override a default),
			// or "", when the artifact gives none.
			if values[k] == "" {
				v = d
			}
		case nil:
		default:
			// Configured with another type: the rules were compiled
			// with it, so it stays.
			v = d
		}
		if err := sc.DefineVariable(k, v); err != nil {
			return fmt.Errorf("external variable %s: %w", k, err)
		}
	}
	return nil
}
