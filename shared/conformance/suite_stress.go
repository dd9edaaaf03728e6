package conformance

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/microengine/microengine/shared"
)

const concurrentScans = 16

func checkConcurrent(ctx context.Context, e *env) outcome {
	s, out, ok := e.fileSession(ctx)
	if !ok {
		return out
	}
	items := append(e.samples(s),
		item{name: "empty file"},
		item{name: "512 KiB noise", content: noise(512<<10, 13)})
	serial := e.serialVerdicts(ctx, s, items, ", serial")
	var p problems
	for _, a := range serial {
		if a.err != nil {
			p.add("%v", a.err)
		}
	}
	if len(p) > 0 {
		return p.outcome("")
	}
	results := make([]answer, concurrentScans)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range concurrentScans {
		wg.Go(func() {
			<-start
			it := items[i%len(items)]
			results[i] = e.scanBytes(ctx, s, nil, fmt.Sprintf("Scan(%s, concurrent #%d)", it.name, i+1), it.content)
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	for i, a := range results {
		it := items[i%len(items)]
		if !a.same(serial[i%len(items)]) {
			p.add("%q: %s concurrently, %s serially", it.name, a, serial[i%len(items)])
		}
	}
	return p.outcome("%d scans in %s, same verdicts", concurrentScans, elapsedSince(began))
}

// The endless stream of the cancellation checks: 32 KiB every 2 ms, about
// 16 MB/s, slow enough that no plugin has a reason to answer before it is
// cancelled, fast enough that it is busy reading when it is.
const (
	streamInterval = 2 * time.Millisecond
	streamStarted  = 256 << 10
	cancelBound    = time.Second
	deadline       = 300 * time.Millisecond
)

// timedBenign scans the plain-text sample and times it: the yardstick for
// "the next scan is answered promptly".
func (e *env) timedBenign(ctx context.Context, s *session) (answer, time.Duration) {
	start := time.Now()
	a := e.scanBytes(ctx, s, nil, "Scan(plain text)", builtinBenign().Content)
	return a, time.Since(start)
}

// nextScanPrompt checks that the plugin has let go of an abandoned scan:
// the host's side of a cancelled call returns at once whatever the plugin
// does (gRPC cancels the stream), so the only sign of a plugin that keeps
// working is that it is still busy. A plugin with one engine, or a pool
// of backend connections, that ignores its context cannot answer.
func (e *env) nextScanPrompt(ctx context.Context, s *session, baseline time.Duration, after string) error {
	budget := (cancelBound + 3*baseline).Round(time.Millisecond)
	what := "Scan(plain text, right after the " + after + " scan)"
	_, err := s.scan(ctx, what, nil, fileArtifact(e.id+"/next", builtinBenign().Content), budget)
	if err != nil {
		s.taint("still busy after a " + after + " scan")
		return fmt.Errorf("the plugin did not answer the next scan promptly, so it is still working on the %s scan: %w", after, err)
	}
	return nil
}

func checkCancel(ctx context.Context, e *env) outcome {
	s, out, ok := e.fileSession(ctx)
	if !ok {
		return out
	}
	base, baseline := e.timedBenign(ctx, s)
	if base.err != nil {
		return failf("%v", base.err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rd := newStreamReader(cctx, streamInterval, streamStarted)
	done := make(chan answer, 1)
	go func() {
		res, err := s.scanner.Scan(cctx, shared.Artifact{ID: e.id, Type: shared.ArtifactFile, Size: -1, Content: rd})
		done <- answer{res, err}
	}()
	select {
	case <-rd.started:
	case a := <-done:
		if a.err == nil && a.res.Verdict == shared.VerdictBenign {
			return failf("Scan(endless stream) answered benign, though nobody can have read the stream to its end")
		}
		return passf("Scan(endless stream) ended before it could be cancelled: %s", a)
	case <-time.After(e.r.cfg.CallTimeout):
		cancel()
		s.taint("an endless stream did not flow")
		return failf("Scan(endless stream) did not take %s within %s", sizeName(streamStarted), e.r.cfg.CallTimeout)
	}
	cancel()
	cancelled := time.Now()
	var a answer
	select {
	case a = <-done:
	case <-time.After(e.r.cfg.CallTimeout):
		s.taint("a cancelled scan did not return")
		return failf("Scan(endless stream) had not returned %s after it was cancelled", e.r.cfg.CallTimeout)
	}
	took := time.Since(cancelled)
	var p problems
	if took > cancelBound {
		p.add("Scan(endless stream) returned %s after it was cancelled", took.Round(time.Millisecond))
	}
	if a.err == nil && a.res.Verdict == shared.VerdictBenign {
		p.add("the cancelled Scan(endless stream) answered benign")
	}
	if err := e.nextScanPrompt(ctx, s, baseline, "cancelled"); err != nil {
		p.add("%v", err)
	}
	return p.outcome("returned %s after the cancellation (%s); the next scan was answered promptly", took.Round(time.Microsecond), a)
}

func checkDeadline(ctx context.Context, e *env) outcome {
	s, out, ok := e.fileSession(ctx)
	if !ok {
		return out
	}
	base, baseline := e.timedBenign(ctx, s)
	if base.err != nil {
		return failf("%v", base.err)
	}
	dctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	rd := newStreamReader(dctx, streamInterval, 0)
	start := time.Now()
	res, err := s.scanner.Scan(dctx, shared.Artifact{ID: e.id, Type: shared.ArtifactFile, Size: -1, Content: rd})
	took := time.Since(start)
	a := answer{res, err}
	var p problems
	if took > deadline+cancelBound {
		p.add("Scan(endless stream, %s deadline) returned after %s", deadline, took.Round(time.Millisecond))
	}
	if err == nil && res.Verdict != shared.VerdictUnknown {
		p.add("Scan(endless stream, %s deadline) answered %s", deadline, a)
	}
	if err := e.nextScanPrompt(ctx, s, baseline, "expired"); err != nil {
		p.add("%v", err)
	}
	return p.outcome("%s after %s; the next scan was answered promptly", a, took.Round(time.Millisecond))
}

func checkStdoutAfterHandshake(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	// Exercise the plugin once more, in case it only writes while working.
	_, _ = s.health(ctx)
	if s.pluginInfo.Supports(shared.ArtifactFile) {
		_ = e.scanBytes(ctx, s, nil, "Scan(plain text)", builtinBenign().Content)
	}
	// go-plugin forwards a plugin's stdout over a gRPC stream of its own,
	// asynchronously.
	time.Sleep(200 * time.Millisecond)
	head, total := e.r.stdout.snapshot()
	if total > 0 {
		return failf("the plugin wrote %d bytes to stdout after the handshake, starting %q; go-plugin forwards them to the host's log as warnings, but a plugin logs with shared.Logger, to stderr", total, head)
	}
	return passf("nothing on stdout")
}

// backendDown stops the plugin's backend, once per run.
func (e *env) backendDown(ctx context.Context) (*session, outcome, bool) {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return nil, out, false
	}
	if !s.pluginInfo.HasBackend {
		return nil, skipf("the plugin declares no backend (Info.HasBackend is false)"), false
	}
	stop, ok := e.r.cfg.stopBackend()
	if !ok {
		return nil, skipf("no way to stop the backend was given (Config.StopBackend or StopBackendCommand; -stop-backend)"), false
	}
	if !e.r.backend.stopped {
		e.r.backend.stopped = true
		sctx, cancel := context.WithTimeout(ctx, e.r.cfg.CallTimeout)
		e.r.backend.err = stop(sctx)
		cancel()
	}
	if e.r.backend.err != nil {
		return nil, failf("could not stop the backend: %v", e.r.backend.err), false
	}
	return s, outcome{}, true
}

func checkBackendHealth(ctx context.Context, e *env) outcome {
	s, out, ok := e.backendDown(ctx)
	if !ok {
		return out
	}
	start := time.Now()
	deadline := start.Add(e.r.cfg.BackendTimeout)
	for {
		h, err := s.health(ctx)
		switch {
		case err != nil:
			return failf("%v", err)
		case !h.Healthy:
			return passf("unhealthy after %s: %q", elapsedSince(start), h.Message)
		case time.Now().After(deadline):
			return failf("Health() still reported healthy (%q) %s after the backend was stopped", h.Message, e.r.cfg.BackendTimeout)
		}
		select {
		case <-ctx.Done():
			return failf("interrupted: %v", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func checkBackendScans(ctx context.Context, e *env) outcome {
	s, out, ok := e.backendDown(ctx)
	if !ok {
		return out
	}
	items := []item{
		{name: "plain text", content: builtinBenign().Content},
		// Fresh bytes, so no cache on either side can answer for the
		// backend.
		{name: "64 KiB of fresh noise", content: noise(64<<10, uint64(time.Now().UnixNano()))},
	}
	if !s.pluginInfo.Supports(shared.ArtifactFile) {
		return skipf("the plugin does not scan file artifacts")
	}
	var p problems
	var got []string
	for _, it := range items {
		a := e.scanBytes(ctx, s, nil, "Scan("+it.name+", backend down)", it.content)
		if a.err == nil && a.res.Verdict != shared.VerdictUnknown {
			p.add("%q: %s with the backend down", it.name, a)
		}
		got = append(got, fmt.Sprintf("%s: %s", it.name, a))
	}
	return p.outcome("%s", strings.Join(got, "; "))
}
