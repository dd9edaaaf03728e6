package marketplace

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestGivingUpNamesTheMarketplacesAnswer: a retry in flight when the
// bounty's time runs out is cut short; the error given up with is what the
// marketplace answered before (here a 503), not the cut.
func TestGivingUpNamesTheMarketplacesAnswer(t *testing.T) {
	ctx, expire := context.WithCancel(context.Background())
	defer expire()
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if posts.Add(1) == 1 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		// Read whole, so the server notices the client going away.
		io.Copy(io.Discard, r.Body)
		expire() // the bounty expires while the retry is in flight
		<-r.Context().Done()
	}))
	defer srv.Close()
	p := &poster{client: srv.Client(), minBackoff: time.Millisecond, maxBackoff: time.Millisecond, attemptTimeout: time.Minute}
	attempts, err := p.post(ctx, srv.URL, []byte("{}"), nil)
	if attempts != 2 || err == nil || !strings.Contains(err.Error(), "503 Service Unavailable") {
		t.Errorf("%d attempts, error %v; want 2 naming the 503", attempts, err)
	}
}
