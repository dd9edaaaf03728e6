package conformance

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/microengine/microengine/shared"
)

// builtinBenign is scanned as benign by every plugin: plain prose that no
// signature or heuristic has reason to flag.
func builtinBenign() shared.Sample {
	return shared.Sample{
		Name:    "conformance-plain-text",
		Content: []byte("microengine conformance suite: an ordinary text file.\nNothing to see here.\n"),
		Verdict: shared.VerdictBenign,
	}
}

// fileArtifact wraps bytes as a file artifact of known size.
func fileArtifact(id string, content []byte) shared.Artifact {
	return shared.Artifact{
		ID:      id,
		Type:    shared.ArtifactFile,
		Size:    int64(len(content)),
		Content: bytes.NewReader(content),
	}
}

// noiseReader yields size pseudo-random bytes, generated as they are read,
// so a large artifact never sits in memory. Different seeds give
// different content: a backend that caches by hash (clamd does) cannot
// answer from its cache.
type noiseReader struct {
	rng  *rand.ChaCha8
	left int64
}

func newNoiseReader(size int64, seed uint64) *noiseReader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return &noiseReader{rng: rand.NewChaCha8(key), left: size}
}

func (r *noiseReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, _ := r.rng.Read(p) // ChaCha8.Read never fails
	r.left -= int64(n)
	return n, nil
}

// noise returns size pseudo-random bytes.
func noise(size int, seed uint64) []byte {
	b := make([]byte, size)
	_, _ = io.ReadFull(newNoiseReader(int64(size), seed), b)
	return b
}

// embed places sample inside size bytes of noise at offset, where it can
// straddle chunk boundaries.
func embed(sample []byte, size, offset int, seed uint64) []byte {
	b := noise(size, seed)
	copy(b[offset:], sample)
	return b
}

// streamReader is an endless artifact for the cancellation checks: it
// yields a chunk every interval until its context is done, and reports (on
// started) once the stream is flowing, so the suite cancels mid-stream and
// not before the plugin has seen any content.
type streamReader struct {
	ctx      context.Context
	chunk    []byte
	interval time.Duration
	after    int64 // bytes read before started is closed
	read     int64
	once     sync.Once
	started  chan struct{}
}

func newStreamReader(ctx context.Context, interval time.Duration, after int64) *streamReader {
	return &streamReader{
		ctx:      ctx,
		chunk:    noise(32<<10, 7),
		interval: interval,
		after:    after,
		started:  make(chan struct{}),
	}
}

// Read honours the context as any reader the host streams from does (an
// HTTP body, a file read between context checks): the host's own side
// must not be what keeps a cancelled scan alive.
func (r *streamReader) Read(p []byte) (int, error) {
	t := time.NewTimer(r.interval)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
		return 0, fmt.Errorf("endless test stream: %w", r.ctx.Err())
	case <-t.C:
	}
	n := copy(p, r.chunk)
	r.read += int64(n)
	if r.read >= r.after {
		r.once.Do(func() { close(r.started) })
	}
	return n, nil
}
