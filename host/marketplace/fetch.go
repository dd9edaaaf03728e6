package marketplace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"time"
)

// fetcher downloads artifacts into temp files: engine.Artifact needs an
// io.ReaderAt, and an artifact is never held whole in memory.
type fetcher struct {
	client       *http.Client // with checkRedirect as its redirect policy
	tmpDir       string
	maxSize      int64
	maxRedirects int
	// lookup resolves a host name for checkRedirect; nil is the system
	// resolver (tests map names to chosen addresses).
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

// spool is one worker's download file, reused from bounty to bounty:
// creating and removing a file per bounty costs more than the rest of a
// small bounty's handling. It is unlinked as soon as it is created, so a
// crash leaves nothing behind in the tmp folder.
type spool struct {
	dir string
	f   *os.File
}

func (s *spool) file() (*os.File, error) {
	if s.f != nil {
		return s.f, nil
	}
	f, err := os.CreateTemp(s.dir, "artifact-*")
	if err != nil {
		return nil, fmt.Errorf("create temp file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("unlink temp file: %w", err)
	}
	s.f = f
	return f, nil
}

// reset empties the file (its disk space is freed at once); on failure the
// file is dropped and the next bounty makes a new one.
func (s *spool) reset() {
	if s.f != nil && s.f.Truncate(0) != nil {
		s.close()
	}
}

func (s *spool) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// newHTTPClient is the client for downloads and answers; each use sets
// its own redirect policy (answersClient, fetcher.checkRedirect).
// Timeouts come from each request's context.
func newHTTPClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// The marketplace is one or two hosts: keep enough idle connections
	// for every worker to reuse one.
	t.MaxIdleConnsPerHost = 64
	if dial != nil {
		t.DialContext = dial
	}
	return &http.Client{Transport: t}
}

// redirectGuard travels in a download's context: once the download has
// passed through a public address, every later connection must go to a
// public one too. checkRedirect refuses internal targets by name;
// guardedDial enforces it on the address actually dialed, so a name that
// resolves differently the second time (DNS rebinding) gains nothing.
type redirectGuard struct{ publicOnly atomic.Bool }

type redirectGuardKey struct{}

// guardedDial dials like net.Dialer, but for a download whose guard says
// public only it resolves the host itself, refuses internal addresses
// and dials exactly the address it checked.
func (f *fetcher) guardedDial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	g, _ := ctx.Value(redirectGuardKey{}).(*redirectGuard)
	if g == nil || !g.publicOnly.Load() {
		return d.DialContext(ctx, network, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	addrs, err := f.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s has no address", host)
	}
	for _, a := range addrs {
		if isInternal(a) {
			return nil, fmt.Errorf("refused to connect to the internal %s (%s) after a public address", host, a)
		}
	}
	return d.DialContext(ctx, network, net.JoinHostPort(addrs[0].String(), port))
}

// answersClient is c that never follows a redirect: a 302 would turn the
// answer's POST into a GET (the store would say answered, and nobody got
// the answer) and a 307 would re-post it wherever the Location says. The
// 3xx itself comes back, and the poster counts it a failed attempt.
func answersClient(c *http.Client) *http.Client {
	ac := *c
	ac.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &ac
}

// downloadsClient is c following at most f.maxRedirects redirects, by
// f.checkRedirect's rules.
func (f *fetcher) downloadsClient(c *http.Client) *http.Client {
	dc := *c
	dc.CheckRedirect = f.checkRedirect
	return &dc
}

// checkRedirect bounds a download's redirects, and refuses one from a
// public address to a loopback, link-local or private one: an artifact
// host on the internet must not make the engine fetch (and then report
// on) what only the engine's own network can reach, such as its metrics.
// A host given by name counts as private when any of its addresses is.
func (f *fetcher) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > f.maxRedirects {
		return fmt.Errorf("stopped after %d redirects", f.maxRedirects)
	}
	ctx := req.Context()
	f.markPublicHops(ctx, via)
	to, err := f.internal(ctx, req.URL.Hostname())
	if err != nil {
		return fmt.Errorf("redirect to %s: %w", req.URL.Host, err)
	}
	if !to {
		return nil
	}
	for _, prev := range via {
		from, err := f.internal(ctx, prev.URL.Hostname())
		if err != nil {
			return fmt.Errorf("redirect from %s: %w", prev.URL.Host, err)
		}
		if !from {
			return fmt.Errorf("refused a redirect from the public %s to the internal %s", prev.URL.Host, req.URL.Host)
		}
	}
	return nil
}

// markPublicHops arms the download's guard once a hop was public.
func (f *fetcher) markPublicHops(ctx context.Context, via []*http.Request) {
	g, _ := ctx.Value(redirectGuardKey{}).(*redirectGuard)
	if g == nil || g.publicOnly.Load() {
		return
	}
	for _, prev := range via {
		if internal, err := f.internal(ctx, prev.URL.Hostname()); err == nil && !internal {
			g.publicOnly.Store(true)
			return
		}
	}
}

// internal reports whether host is, or resolves to, a loopback,
// link-local, private or unspecified address.
func (f *fetcher) internal(ctx context.Context, host string) (bool, error) {
	addrs, err := f.resolve(ctx, host)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if isInternal(a) {
			return true, nil
		}
	}
	return false, nil
}

func (f *fetcher) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	lookup := f.lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	addrs, err := lookup(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	return addrs, nil
}

func isInternal(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsUnspecified() || a.IsInterfaceLocalMulticast()
}

// fetch streams uri into the spool file, checking the size limit as it
// goes and the sha256 when one is given (lowercase hex), and returns the
// size. Every failure is an error: the caller answers unknown.
func (f *fetcher) fetch(ctx context.Context, sp *spool, uri, wantSHA256 string) (int64, error) {
	ctx = context.WithValue(ctx, redirectGuardKey{}, &redirectGuard{})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("download artifact: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Drain a little so the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		return 0, fmt.Errorf("download artifact: HTTP %s", resp.Status)
	}
	if resp.ContentLength > f.maxSize {
		return 0, fmt.Errorf("artifact is %d bytes, over the %d-byte limit", resp.ContentLength, f.maxSize)
	}

	sp.reset() // before file(): a reset that fails drops the file for a new one
	file, err := sp.file()
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(io.NewOffsetWriter(file, 0), h), io.LimitReader(resp.Body, f.maxSize+1))
	switch {
	case err != nil:
		return 0, fmt.Errorf("download artifact: %w", err)
	case n > f.maxSize:
		return 0, fmt.Errorf("artifact is over the %d-byte limit", f.maxSize)
	case resp.ContentLength >= 0 && n != resp.ContentLength:
		return 0, fmt.Errorf("download artifact: got %d of %d bytes", n, resp.ContentLength)
	case wantSHA256 != "" && hex.EncodeToString(h.Sum(nil)) != wantSHA256:
		return 0, fmt.Errorf("sha256 mismatch: the bounty says %s, the download is %s", wantSHA256, hex.EncodeToString(h.Sum(nil)))
	}
	return n, nil
}
