package marketplace

import (
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// limitListener bounds the open connections of a listener. A connection
// over the limit is answered 503 (plain HTTP; under TLS it is only closed)
// and closed at once instead of waiting in the kernel's backlog, so the
// marketplace learns to retry and a flood of idle connections costs
// nothing beyond the limit.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	plainHTTP bool
	log       hclog.Logger
}

func newLimitListener(ln net.Listener, n int, plainHTTP bool, log hclog.Logger) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), plainHTTP: plainHTTP, log: log}
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
		select {
		case l.slots <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
		}
		if l.plainHTTP {
			// Into the socket's send buffer: this does not wait for the peer.
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write(refusal)
		}
		c.Close()
	}
}

// limitConn gives its slot back once, when closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
