package clamd

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// Kept sessions. clamd spends a good part of a small scan on the
// connection itself (accept, poll registration, close), and so do we
// (dial, close): an IDSESSION connection kept between scans saves both. A
// bare client keeping sessions scanned 20-30% more 4 KiB artifacts a second
// than one with a connection per artifact (2 cores, clamd on tmpfs).
//
// A kept session carries only an artifact that fits in one frame, which
// stays in our buffer until clamd answers. So a session clamd dropped while
// it sat idle (its ReadTimeout, a restart) costs a resend on a new
// connection, never a verdict. Larger artifacts get a connection of their
// own, where such a loss could not be undone, and the connection setup is
// nothing beside their transfer anyway.
//
// clamd runs each command of a session on the engine loaded at the time,
// so a kept session sees a signature reload like a new connection does.

const (
	cmdSession = "zIDSESSION\x00"
	// sessionMaxIdle: a session idle longer than this is closed rather
	// than reused. clamd drops an idle session after its ReadTimeout
	// (default 120s); staying well below it saves resends.
	sessionMaxIdle = 10 * time.Second
)

// session is one connection to clamd. In IDSESSION mode (kept is true)
// clamd numbers its replies; otherwise it answers one command and closes.
type session struct {
	conn net.Conn
	kept bool
	// commands is how many commands were sent in the session; clamd
	// prefixes its reply to the nth with "n: ".
	commands  int
	idleSince time.Time
}

// reused reports whether the session has sat idle in the pool, where clamd
// may have dropped it.
func (s *session) reused() bool { return !s.idleSince.IsZero() }

// unwrap checks and removes the "n: " that clamd puts before each reply in
// a session. A reply that carries another number answers another command:
// the session is out of step and must not be trusted with a verdict. A
// reply without a number is clamd's notice about the connection itself
// (COMMAND READ TIMED OUT when it dropped an idle session), not an answer
// to the command: numbered reports which it is.
func (s *session) unwrap(raw []byte) (body []byte, numbered bool, err error) {
	if !s.kept {
		return raw, true, nil
	}
	prefix := strconv.Itoa(s.commands) + ": "
	if rest, ok := bytes.CutPrefix(raw, []byte(prefix)); ok {
		return rest, true, nil
	}
	if i := bytes.Index(raw, []byte(": ")); i > 0 {
		if _, err := strconv.Atoi(string(raw[:i])); err == nil {
			return nil, false, fmt.Errorf("%w: reply %s answers another command than number %d of the session", ErrProtocol, quote(raw), s.commands)
		}
	}
	if bytes.HasPrefix(raw, []byte(streamPrefix)) || bytes.HasPrefix(raw, []byte("fd[")) {
		return nil, false, fmt.Errorf("%w: reply %s in a session lacks the command's number", ErrProtocol, quote(raw))
	}
	return raw, false, nil
}

// sessionPool holds idle kept sessions, the most recently used on top.
type sessionPool struct {
	max    int
	mu     sync.Mutex
	idle   []*session
	closed bool
}

// get returns an idle session young enough to reuse, or nil.
func (p *sessionPool) get() *session {
	if p.max <= 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.idle) > 0 {
		s := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if time.Since(s.idleSince) < sessionMaxIdle {
			return s
		}
		s.conn.Close()
	}
	return nil
}

// put keeps s for reuse, or closes it when the pool is full or closed.
func (p *sessionPool) put(s *session) {
	if !s.kept || s.conn.SetDeadline(time.Time{}) != nil {
		s.conn.Close()
		return
	}
	s.idleSince = time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= p.max {
		s.conn.Close()
		return
	}
	p.idle = append(p.idle, s)
}

// close closes the idle sessions; sessions in use are closed when they
// come back.
func (p *sessionPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, s := range p.idle {
		s.conn.Close()
	}
	p.idle = nil
}
