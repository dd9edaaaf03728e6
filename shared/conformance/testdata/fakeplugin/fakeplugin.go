// Package fakeplugin is a small EICAR-detecting scanner with switchable
// faults. The conformance suite's own tests build one binary per fault
// (testdata/broken/NAME) and one healthy plugin with a fake backend
// (testdata/plugins/backend), and check that the suite tells them apart.
//
// It lives under testdata so `go build ./...` and `go vet ./...` never see
// it; the tests build it explicitly.
package fakeplugin

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/shared"
)

// EICAR is the standard 68-byte anti-virus test string.
const EICAR = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// Family is the malware family reported for EICAR.
const Family = "EICAR-Test-File"

// Options switches the faults on.
type Options struct {
	Name string
	// HasBackend makes the plugin depend on a "backend": the file named by
	// the "backend" setting, which must exist. Removing it stops the backend.
	HasBackend bool
	// IgnoreBackendDown keeps answering healthy and benign when the backend
	// is gone (the fault BACKEND-001/002 catch).
	IgnoreBackendDown bool
	// AllBenign answers benign for everything, EICAR included.
	AllBenign bool
	// IgnoreCancel models a single-threaded engine that ignores its
	// context: one scan at a time, and a cancelled scan keeps the engine
	// busy for a long "analysis".
	IgnoreCancel bool
	// CrashAbove makes the process exit once a scan has read more than this
	// many bytes (0: never).
	CrashAbove int64
	// IgnoreStreamLength drops shared.ErrStreamLength (a stream shorter or
	// longer than announced) and answers on the bytes it read.
	IgnoreStreamLength bool
	// PrintOnScan writes a line to stdout on every scan, after the
	// handshake.
	PrintOnScan bool
	// ByReference declares that the plugin takes artifacts by reference.
	ByReference bool
	// LeakDescriptors keeps a duplicate of every descriptor it is passed
	// (the fault REF-002 catches).
	LeakDescriptors bool
	// ParseELF reads an ELF header's program-header offset without first
	// checking that the header is whole: content that starts like an ELF
	// file but is cut short panics (slice bounds out of range). Only
	// hostile content triggers it.
	ParseELF bool
	// CrashAfterZip leaves a goroutine behind on content that starts with
	// a zip header; it panics when the next scan starts, so the process
	// dies during an input that alone does not crash it.
	CrashAfterZip bool
}

type settings struct {
	Backend string `json:"backend"`
}

// Scanner is the fake scanner.
type Scanner struct {
	opts   Options
	log    hclog.Logger
	mu     sync.Mutex // guards cfg and leaked
	cfg    settings
	leaked []int
	engine sync.Mutex // the single engine of IgnoreCancel
	// leftBehind, with CrashAfterZip, is closed by the next scan to
	// set off the goroutine a zip header left.
	leftBehind chan struct{}
}

// New returns a fake scanner.
func New(opts Options, log hclog.Logger) *Scanner {
	return &Scanner{opts: opts, log: log}
}

// Main serves the fake scanner as a plugin.
func Main(opts Options) {
	log := shared.Logger(opts.Name)
	shared.Serve(New(opts, log), log)
}

func (s *Scanner) Info(context.Context) (shared.Info, error) {
	info := shared.Info{
		Name:          s.opts.Name,
		Version:       "0.1.0",
		Vendor:        "conformance-testdata",
		VendorVersion: "0.1.0",
		ArtifactTypes: []shared.ArtifactType{shared.ArtifactFile},
		ConfigSchema: []shared.ConfigField{{
			Name: "backend", Type: shared.FieldString, Required: s.opts.HasBackend,
			Description: "a file whose existence stands for a reachable backend",
		}},
		Samples: []shared.Sample{
			{Name: "eicar", Content: []byte(EICAR), Verdict: shared.VerdictMalicious, MalwareFamily: Family},
			{Name: "clean", Content: []byte("a clean file\n"), Verdict: shared.VerdictBenign},
		},
		HasBackend:  s.opts.HasBackend,
		ByReference: s.opts.ByReference,
	}
	return info, nil
}

func (s *Scanner) Configure(_ context.Context, raw []byte) error {
	next := settings{}
	if err := shared.DecodeConfig(raw, &next); err != nil {
		return err
	}
	if s.opts.HasBackend && next.Backend == "" {
		return (&shared.ConfigError{}).Add("backend", "required")
	}
	s.mu.Lock()
	s.cfg = next
	s.mu.Unlock()
	return nil
}

func (s *Scanner) backendUp() error {
	if !s.opts.HasBackend || s.opts.IgnoreBackendDown {
		return nil
	}
	s.mu.Lock()
	path := s.cfg.Backend
	s.mu.Unlock()
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("backend unreachable: %w", err)
	}
	return nil
}

func (s *Scanner) Health(context.Context) (shared.Health, error) {
	if err := s.backendUp(); err != nil {
		return shared.Health{Healthy: false, Message: err.Error()}, nil
	}
	return shared.Health{Healthy: true, Message: "ok"}, nil
}

func (s *Scanner) Scan(ctx context.Context, a shared.Artifact) (shared.Result, error) {
	if s.opts.PrintOnScan {
		fmt.Println("scanning", a.ID)
	}
	if a.Type != shared.ArtifactFile {
		return shared.Unknown("files only"), nil
	}
	if s.opts.LeakDescriptors && a.File != nil {
		if fd, err := syscall.Dup(int(a.File.Fd())); err == nil {
			s.mu.Lock()
			s.leaked = append(s.leaked, fd)
			s.mu.Unlock()
		}
	}
	if s.opts.IgnoreCancel {
		s.engine.Lock()
		defer s.engine.Unlock()
		found, _, err := s.find(context.Background(), a.Content)
		if errors.Is(err, shared.ErrStreamLength) {
			return shared.Unknown("%v", err), nil
		}
		if err != nil {
			// The stream broke because the host gave up: carry on
			// analysing anyway, without looking at ctx.
			time.Sleep(20 * time.Second)
			return shared.Unknown("stream broke: %v", err), nil
		}
		return s.verdict(found), nil
	}
	if err := s.backendUp(); err != nil {
		return shared.Unknown("%v", err), nil
	}
	if s.opts.ParseELF {
		a.Content = s.peekELF(a.Content)
	}
	if s.opts.CrashAfterZip {
		s.mu.Lock()
		left := s.leftBehind
		s.mu.Unlock()
		if left != nil {
			close(left) // the process dies during this scan
			<-ctx.Done()
			return shared.Result{}, ctx.Err()
		}
		a.Content = s.peekZip(a.Content)
	}
	found, _, err := s.find(ctx, a.Content)
	if s.opts.IgnoreStreamLength && errors.Is(err, shared.ErrStreamLength) {
		err = nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return shared.Result{}, fmt.Errorf("scan: %w", ctx.Err())
		}
		return shared.Unknown("read: %v", err), nil
	}
	return s.verdict(found), nil
}

// peekELF looks at the ELF header, if r starts with one, and returns a
// reader of the whole content.
func (s *Scanner) peekELF(r io.Reader) io.Reader {
	head := make([]byte, 64)
	n, _ := io.ReadFull(r, head)
	head = head[:n:n]
	if bytes.HasPrefix(head, []byte("\x7fELF")) {
		phoff := binary.LittleEndian.Uint64(head[32:40]) // the bug: head may be shorter
		s.log.Debug("ELF file", "phoff", phoff)
	}
	return io.MultiReader(bytes.NewReader(head), r)
}

// peekZip leaves a goroutine behind when r starts with a zip header: it
// panics once the next scan starts.
func (s *Scanner) peekZip(r io.Reader) io.Reader {
	head := make([]byte, 4)
	n, _ := io.ReadFull(r, head)
	head = head[:n]
	if bytes.Equal(head, []byte("PK\x03\x04")) {
		left := make(chan struct{})
		s.mu.Lock()
		s.leftBehind = left
		s.mu.Unlock()
		go func() {
			<-left
			var pending map[string]int
			pending["entry"]++ // the bug, in work left behind
		}()
	}
	return io.MultiReader(bytes.NewReader(head), r)
}

func (s *Scanner) verdict(found bool) shared.Result {
	if found && !s.opts.AllBenign {
		return shared.Result{Verdict: shared.VerdictMalicious, Confidence: 1, MalwareFamily: Family}
	}
	return shared.Result{Verdict: shared.VerdictBenign, Confidence: 1}
}

// find reports whether EICAR occurs in r, carrying a tail across reads.
// On a read error it reports what it found until then, with the error.
func (s *Scanner) find(ctx context.Context, r io.Reader) (bool, int64, error) {
	carry := len(EICAR) - 1
	buf := make([]byte, carry+64<<10)
	kept := 0
	var total int64
	found := false
	for {
		if err := ctx.Err(); err != nil {
			return false, total, err
		}
		n, err := r.Read(buf[kept:])
		total += int64(n)
		if s.opts.CrashAbove > 0 && total > s.opts.CrashAbove {
			s.log.Error("too much input, crashing", "read", total)
			os.Exit(2)
		}
		window := buf[:kept+n]
		if bytes.Contains(window, []byte(EICAR)) {
			found = true
		}
		kept = copy(buf, window[max(0, len(window)-carry):])
		if errors.Is(err, io.EOF) {
			return found, total, nil
		}
		if err != nil {
			return found, total, err
		}
	}
}
