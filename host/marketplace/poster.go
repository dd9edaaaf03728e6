package marketplace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// poster delivers answers to response_url, retrying with exponential
// backoff until the context (the bounty's expiration) ends: a late answer
// earns nothing, so there is no point trying after it.
type poster struct {
	client     *http.Client
	minBackoff time.Duration
	maxBackoff time.Duration
	// attemptTimeout bounds one POST, so a hung marketplace still leaves
	// time for another try.
	attemptTimeout time.Duration
}

// errPermanent marks an answer the marketplace refused for good (a 4xx
// other than 408, 425 or 429): retrying the same body cannot help.
var errPermanent = errors.New("refused by the marketplace")

// post sends body and returns how many attempts it took. When it gives
// up, the error is the last one the marketplace (or the way to it) caused:
// an attempt the expiration cut short says nothing about why the answer
// was not taken, and naming it instead made the record's reason depend on
// whether a retry happened to be in flight at the expiration.
func (p *poster) post(ctx context.Context, url string, body []byte, onRetry func(attempt int, err error)) (int, error) {
	backoff := p.minBackoff
	var last error
	for attempt := 1; ; attempt++ {
		err := p.once(ctx, url, body)
		if err == nil {
			return attempt, nil
		}
		if errors.Is(err, errPermanent) {
			return attempt, err
		}
		if ctx.Err() != nil && last != nil {
			return attempt, fmt.Errorf("gave up after %d attempts (the last cut short by the expiration), the one before: %w", attempt, last)
		}
		last = err
		if onRetry != nil {
			onRetry(attempt, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return attempt, fmt.Errorf("gave up after %d attempts, the last: %w", attempt, err)
		case <-t.C:
		}
		backoff = min(2*backoff, p.maxBackoff)
	}
}

func (p *poster) once(ctx context.Context, url string, body []byte) error {
	if p.attemptTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.attemptTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build answer request: %w: %w", errPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("post answer: %w", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch c := resp.StatusCode; {
	case c >= 200 && c <= 299:
		return nil
	case c >= 300 && c <= 399:
		// Never followed (answersClient): the answer was not taken.
		return fmt.Errorf("post answer: HTTP %s (to %q): answers do not follow redirects", resp.Status, truncate(resp.Header.Get("Location"), 200))
	case c == http.StatusRequestTimeout || c == http.StatusTooEarly || c == http.StatusTooManyRequests:
		return fmt.Errorf("post answer: HTTP %s", resp.Status)
	case c >= 400 && c <= 499:
		return fmt.Errorf("post answer: HTTP %s %q: %w", resp.Status, bytes.TrimSpace(snippet), errPermanent)
	default:
		return fmt.Errorf("post answer: HTTP %s", resp.Status)
	}
}
