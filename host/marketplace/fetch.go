package marketplace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
)

// fetcher downloads artifacts into temp files: engine.Artifact needs an
// io.ReaderAt, and an artifact is never held whole in memory.
type fetcher struct {
	client  *http.Client
	tmpDir  string
	maxSize int64
}

// spooled is a downloaded artifact. Close removes it.
type spooled struct {
	f    *os.File
	size int64
}

func (s *spooled) Close() error {
	name := s.f.Name()
	err := s.f.Close()
	if rmErr := os.Remove(name); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}

// newHTTPClient is the client for downloads and answers. Redirects are
// bounded; timeouts come from each request's context.
func newHTTPClient(maxRedirects int, base http.RoundTripper) *http.Client {
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// The marketplace is one or two hosts: keep enough idle
		// connections for every worker to reuse one.
		t.MaxIdleConnsPerHost = 64
		base = t
	}
	return &http.Client{
		Transport: base,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			return nil
		},
	}
}

// fetch streams uri into a temp file, checking the size limit as it goes
// and the sha256 when one is given (lowercase hex). Every failure is an
// error: the caller answers unknown.
func (f *fetcher) fetch(ctx context.Context, uri, wantSHA256 string) (*spooled, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download artifact: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Drain a little so the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		return nil, fmt.Errorf("download artifact: HTTP %s", resp.Status)
	}
	if resp.ContentLength > f.maxSize {
		return nil, fmt.Errorf("artifact is %d bytes, over the %d-byte limit", resp.ContentLength, f.maxSize)
	}

	tmp, err := os.CreateTemp(f.tmpDir, "artifact-*")
	if err != nil {
		return nil, fmt.Errorf("create temp file: %w", err)
	}
	sp := &spooled{f: tmp}
	var h hash.Hash = sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(resp.Body, f.maxSize+1))
	switch {
	case err != nil:
		err = fmt.Errorf("download artifact: %w", err)
	case n > f.maxSize:
		err = fmt.Errorf("artifact is over the %d-byte limit", f.maxSize)
	case resp.ContentLength >= 0 && n != resp.ContentLength:
		err = fmt.Errorf("download artifact: got %d of %d bytes", n, resp.ContentLength)
	case wantSHA256 != "" && hex.EncodeToString(h.Sum(nil)) != wantSHA256:
		err = fmt.Errorf("sha256 mismatch: the bounty says %s, the download is %s", wantSHA256, hex.EncodeToString(h.Sum(nil)))
	}
	if err != nil {
		sp.Close()
		return nil, err
	}
	sp.size = n
	return sp, nil
}

// errNoTime means the deadline left no time to do the work.
var errNoTime = errors.New("not enough time left before the expiration")
