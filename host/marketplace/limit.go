package marketplace

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// limitListener bounds the open connections of a listener. At the limit, a
// connection that has been reading its headers, or idle between requests,
// for minConnHold gives its slot up to the newcomer (it is closed: it has
// no request in a handler); when none has, the newcomer is answered 503
// (plain HTTP; under TLS it is only closed) and closed at once instead of
// waiting in the kernel's backlog, so the marketplace learns to retry and
// a flood of idle connections costs nothing beyond the limit. Without the
// taking over, 1,100 strangers sending their headers a byte a second held
// every slot for the whole header timeout, again and again: half the
// signed bounties were refused.
type limitListener struct {
	net.Listener
	max       int
	plainHTTP bool
	log       hclog.Logger

	mu    sync.Mutex
	conns map[*limitConn]struct{}
}

// minConnHold is how long a connection may read its headers, or sit idle,
// before a newcomer may take its slot at the limit: the marketplace sends
// a webhook's headers in one write.
const minConnHold = 250 * time.Millisecond

func newLimitListener(ln net.Listener, n int, plainHTTP bool, log hclog.Logger) *limitListener {
	return &limitListener{Listener: ln, max: n, plainHTTP: plainHTTP, log: log, conns: map[*limitConn]struct{}{}}
}

// refusalBody and refusal are the whole answer to a connection over the
// limit.
const refusalBody = `{"status":"ERROR","reason":"too many connections: retry"}` + "\n"

var refusal = []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n" +
	"Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(refusalBody)) + "\r\n\r\n" + refusalBody)

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		now := time.Now()
		lc := &limitConn{Conn: c, l: l}
		lc.since.Store(now.UnixNano())
		l.mu.Lock()
		var victim *limitConn
		if len(l.conns) >= l.max {
			victim = l.idlest(now)
			if victim != nil {
				delete(l.conns, victim) // its slot is the newcomer's
			}
		}
		admitted := len(l.conns) < l.max
		if admitted {
			l.conns[lc] = struct{}{}
		}
		l.mu.Unlock()
		if victim != nil {
			victim.Conn.Close()
		}
		if admitted {
			return lc, nil
		}
		if l.plainHTTP {
			// Into the socket's send buffer: this does not wait for the peer.
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write(refusal)
		}
		c.Close()
	}
}

// idlest is the connection with no request in a handler that has waited
// longest, if for minConnHold; nil when there is none. Under l.mu.
func (l *limitListener) idlest(now time.Time) *limitConn {
	var oldest *limitConn
	var oldestSince int64
	for c := range l.conns {
		if c.serving.Load() > 0 {
			continue
		}
		since := c.since.Load()
		if now.Sub(time.Unix(0, since)) >= minConnHold && (oldest == nil || since < oldestSince) {
			oldest, oldestSince = c, since
		}
	}
	return oldest
}

// limitConn gives its slot back once, when closed. serving counts its
// requests in a handler; since is when it was accepted or its last request
// ended (unix ns).
type limitConn struct {
	net.Conn
	l       *limitListener
	once    sync.Once
	serving atomic.Int32
	since   atomic.Int64
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}

// connKey carries a request's connection in its context (limitConns).
type connKey struct{}

// withConn is http.Server.ConnContext for a limitListener's server.
func withConn(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if lc, ok := c.(*limitConn); ok {
		return context.WithValue(ctx, connKey{}, lc)
	}
	return ctx
}

// limitConns marks a connection as serving while h handles a request on
// it, so the listener never gives its slot away meanwhile.
func limitConns(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if lc, ok := r.Context().Value(connKey{}).(*limitConn); ok {
			lc.serving.Add(1)
			defer func() {
				lc.since.Store(time.Now().UnixNano())
				lc.serving.Add(-1)
			}()
		}
		h.ServeHTTP(w, r)
	})
}
