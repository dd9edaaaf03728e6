package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/shared"
)

// EICAR is the standard 68-byte anti-virus test string.
const EICAR = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// Family is the malware family reported for the test file.
const Family = "EICAR-Test-File"

// strictMaxSize is the EICAR convention's limit: the string, then only
// whitespace, in at most 128 bytes.
const strictMaxSize = 128

// readSize is how much is read at a time; the scan holds one such buffer
// plus the few bytes carried across reads.
const readSize = 64 << 10

type settings struct {
	Strict bool `json:"strict"`
}

// Scanner finds EICAR in a stream without holding the artifact.
type Scanner struct {
	version string
	log     hclog.Logger
	// cfg is swapped whole so Configure is safe beside running scans.
	cfg atomic.Pointer[settings]
}

// NewScanner returns an eicar scanner with default settings.
func NewScanner(version string, log hclog.Logger) *Scanner {
	s := &Scanner{version: version, log: log}
	s.cfg.Store(&settings{})
	return s
}

func (s *Scanner) Info(context.Context) (shared.Info, error) {
	return shared.Info{
		Name:          "eicar",
		Version:       s.version,
		Vendor:        "microengine",
		VendorVersion: s.version,
		ArtifactTypes: []shared.ArtifactType{shared.ArtifactFile},
		// Files come as a descriptor that Content reads with pread: no
		// gRPC stream, which is most of a small file's cost.
		ByReference: true,
		ConfigSchema: []shared.ConfigField{{
			Name: "strict", Type: shared.FieldBool, Default: "false",
			Description: "follow the EICAR convention: the file starts with the string, then only whitespace, at most 128 bytes",
		}},
		Samples: []shared.Sample{
			{Name: "eicar", Content: []byte(EICAR), Verdict: shared.VerdictMalicious, MalwareFamily: Family},
			{Name: "clean", Content: []byte("just an ordinary text file\n"), Verdict: shared.VerdictBenign},
		},
	}, nil
}

// Configure applies the config block: an absent attribute takes its
// default, and a refused block leaves the running settings in force.
func (s *Scanner) Configure(_ context.Context, raw []byte) error {
	next := &settings{}
	if err := shared.DecodeConfig(raw, next); err != nil {
		return err
	}
	s.cfg.Store(next)
	return nil
}

func (s *Scanner) Health(context.Context) (shared.Health, error) {
	return shared.Health{Healthy: true, Message: "no backend", VendorVersion: s.version}, nil
}

func (s *Scanner) Scan(ctx context.Context, a shared.Artifact) (shared.Result, error) {
	if a.Type != shared.ArtifactFile {
		return shared.Unknown("the eicar plugin scans files, not %s artifacts", a.Type), nil
	}
	var (
		found bool
		n     int64
		err   error
	)
	if s.cfg.Load().Strict {
		found, n, err = matchStrict(ctx, a.Content)
	} else {
		found, n, err = contains(ctx, a.Content)
	}
	if err != nil {
		if ctx.Err() != nil {
			return shared.Result{}, fmt.Errorf("eicar scan: %w", ctx.Err())
		}
		return shared.Unknown("reading the artifact failed after %d bytes: %v", n, err), nil
	}
	if found {
		return shared.Result{Verdict: shared.VerdictMalicious, Confidence: 1, MalwareFamily: Family, BytesScanned: n}, nil
	}
	return shared.Result{Verdict: shared.VerdictBenign, Confidence: 1, BytesScanned: n}, nil
}

// contains reports whether EICAR occurs anywhere in r, carrying the last
// len(EICAR)-1 bytes of each read so a string split across chunks is found.
func contains(ctx context.Context, r io.Reader) (bool, int64, error) {
	carry := len(EICAR) - 1
	buf := make([]byte, carry+readSize)
	kept := 0
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return false, total, err
		}
		n, err := r.Read(buf[kept:])
		total += int64(n)
		window := buf[:kept+n]
		if bytes.Contains(window, []byte(EICAR)) {
			return true, total, nil
		}
		kept = copy(buf, window[max(0, len(window)-carry):])
		if errors.Is(err, io.EOF) {
			return false, total, nil
		}
		if err != nil {
			return false, total, err
		}
	}
}

// matchStrict applies the EICAR convention. It reads at most
// strictMaxSize+1 bytes: anything longer is not the test file.
func matchStrict(ctx context.Context, r io.Reader) (bool, int64, error) {
	head, err := io.ReadAll(io.LimitReader(r, strictMaxSize+1))
	n := int64(len(head))
	if err != nil {
		return false, n, err
	}
	if err := ctx.Err(); err != nil {
		return false, n, err
	}
	if len(head) > strictMaxSize || !bytes.HasPrefix(head, []byte(EICAR)) {
		return false, n, nil
	}
	return len(bytes.TrimRight(head[len(EICAR):], " \t\r\n\x1a")) == 0, n, nil
}
