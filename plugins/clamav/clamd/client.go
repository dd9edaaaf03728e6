package clamd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Chunk sizes for INSTREAM. clamd reads each chunk into its own buffer; 1-2
// KiB chunks are markedly slower than 64 KiB and more, and above 1 MiB there
// is nothing left to gain.
const (
	MinChunkSize     = 64 << 10
	DefaultChunkSize = 256 << 10
	MaxChunkSize     = 1 << 20
)

// DefaultDialTimeout bounds opening a connection when the context allows
// longer: a local clamd accepts in microseconds, or not at all.
const DefaultDialTimeout = 5 * time.Second

// Reply size bounds: a scan reply is one short line; STATS grows with the
// number of pools and queued jobs.
const (
	maxReplySize = 4 << 10
	maxStatsSize = 1 << 20
)

// Options tune a Client. The zero value is usable.
type Options struct {
	// ChunkSize is the size of the INSTREAM chunks sent to clamd, clamped
	// to [MinChunkSize, MaxChunkSize]; 0 means DefaultChunkSize. Content is
	// re-buffered to this size whatever sizes its reader yields.
	ChunkSize int
	// DialTimeout bounds opening a connection; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// Timeout bounds each call, on top of the context's own deadline; 0
	// means only the context's.
	Timeout time.Duration
	// MaxStreamSize, when > 0, caps the content of one INSTREAM: a stream
	// that turns out longer is abandoned with ErrSizeLimit before any byte
	// past the cap is sent. Set it no higher than clamd's StreamMaxLength.
	MaxStreamSize int64
	// Sessions is how many idle IDSESSION connections are kept for reuse
	// by artifacts that fit in one chunk; 0 means none: every call opens
	// its own connection. Set it to the number of concurrent scans. With
	// sessions on, every FILDES rides one IDSESSION connection, many at
	// once (see pipe.go).
	Sessions int
	// RetryBackoff, when > 0, is the pause before one more try of an
	// INSTREAM whose connection was refused (a clamd restarting, a full
	// listen queue), made only while clamd has not seen the artifact and
	// when the context leaves time for it.
	RetryBackoff time.Duration
}

// Client talks to one clamd. It is safe for concurrent use. Each call opens
// its own connection, except for INSTREAMs that reuse kept sessions (see
// Options.Sessions); Close closes those.
type Client struct {
	addr     Address
	opts     Options
	dialer   net.Dialer
	sessions sessionPool
	// bufs recycles INSTREAM frame buffers, so a busy scanner does not
	// allocate a chunk per scan.
	bufs sync.Pool
	// pipe carries FILDES commands when sessions are on (see pipe.go);
	// after Close, FILDES opens a connection per call.
	pipeMu     sync.Mutex
	pipe       *pipe
	pipeClosed bool
}

// NewClient returns a client for the clamd at address (see ParseAddress).
func NewClient(address string, opts Options) (*Client, error) {
	addr, err := ParseAddress(address)
	if err != nil {
		return nil, err
	}
	switch {
	case opts.ChunkSize == 0:
		opts.ChunkSize = DefaultChunkSize
	case opts.ChunkSize < MinChunkSize:
		opts.ChunkSize = MinChunkSize
	case opts.ChunkSize > MaxChunkSize:
		opts.ChunkSize = MaxChunkSize
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	c := &Client{addr: addr, opts: opts, dialer: net.Dialer{Timeout: opts.DialTimeout}, sessions: sessionPool{max: opts.Sessions}}
	// One frame: the INSTREAM command (first frame only), a length
	// prefix, a chunk, and the zero-length terminator when it is the last.
	frameSize := len(cmdInstream) + 4 + opts.ChunkSize + 4
	c.bufs.New = func() any {
		b := make([]byte, frameSize)
		return &b
	}
	return c, nil
}

// Close closes the kept sessions. The client stays usable; sessions in use
// are closed when their call ends.
func (c *Client) Close() error {
	c.sessions.close()
	c.closePipe()
	return nil
}

// Address is the clamd address this client talks to.
func (c *Client) Address() Address { return c.addr }

// Options returns the client's options, defaults filled in.
func (c *Client) Options() Options { return c.opts }

const (
	cmdPing     = "zPING\x00"
	cmdVersion  = "zVERSION\x00"
	cmdStats    = "zSTATS\x00"
	cmdInstream = "zINSTREAM\x00"
	cmdReload   = "zRELOAD\x00"
)

// connect opens a connection for INSTREAM, as a kept session when sessions
// are enabled, retrying once after RetryBackoff when it is refused.
func (c *Client) connect(ctx context.Context, name string) (*session, error) {
	s, err := c.open(ctx, name)
	if err == nil || c.opts.RetryBackoff <= 0 || !Retryable(err) {
		return s, err
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 3*c.opts.RetryBackoff {
		return nil, err
	}
	t := time.NewTimer(c.opts.RetryBackoff)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, err
	case <-t.C:
	}
	return c.open(ctx, name)
}

func (c *Client) open(ctx context.Context, name string) (*session, error) {
	conn, err := c.dial(ctx, name)
	if err != nil {
		return nil, err
	}
	s := &session{conn: conn}
	if c.opts.Sessions > 0 {
		if _, err := io.WriteString(conn, cmdSession); err != nil {
			conn.Close()
			return nil, c.fail(name, false, 0, "", fmt.Errorf("%w: start session: %w", ErrConnect, c.ioError(ctx, "send IDSESSION", err)))
		}
		s.kept = true
	}
	return s, nil
}

// consumed marks a connection failure that came after the content was
// read: the call cannot be repeated with the same reader.
func consumed(err error) error {
	var ce *Error
	if errors.As(err, &ce) {
		ce.Sent = true
	}
	return err
}

// Ping asks clamd for PONG.
func (c *Client) Ping(ctx context.Context) error {
	reply, err := c.simple(ctx, "PING", cmdPing, maxReplySize)
	if err != nil {
		return err
	}
	if reply != "PONG" {
		return c.fail("PING", true, 0, reply, fmt.Errorf("%w: want PONG, got %q", ErrProtocol, reply))
	}
	return nil
}

// Version asks clamd for its engine and database versions.
func (c *Client) Version(ctx context.Context) (Version, error) {
	reply, err := c.simple(ctx, "VERSION", cmdVersion, maxReplySize)
	if err != nil {
		return Version{}, err
	}
	v, err := ParseVersion(reply)
	if err != nil {
		return Version{}, c.fail("VERSION", true, 0, reply, err)
	}
	return v, nil
}

// Reload asks clamd to reload its signature database. clamd answers
// RELOADING at once and loads in the background: with its default
// ConcurrentDatabaseReload it scans on the old database until the new one
// is in place.
func (c *Client) Reload(ctx context.Context) error {
	reply, err := c.simple(ctx, "RELOAD", cmdReload, maxReplySize)
	if err != nil {
		return err
	}
	if reply != "RELOADING" {
		return c.fail("RELOAD", true, 0, reply, fmt.Errorf("%w: want RELOADING, got %q", ErrProtocol, reply))
	}
	return nil
}

// Stats asks clamd for its thread pool and queue report.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	reply, err := c.simple(ctx, "STATS", cmdStats, maxStatsSize)
	if err != nil {
		return Stats{}, err
	}
	st, err := ParseStats(reply)
	if err != nil {
		return Stats{}, c.fail("STATS", true, 0, reply, err)
	}
	return st, nil
}

// simple sends a command that carries no content and returns its reply,
// terminator removed.
func (c *Client) simple(ctx context.Context, name, cmd string, max int) (string, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	conn, err := c.dial(ctx, name)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if _, err := io.WriteString(conn, cmd); err != nil {
		return "", c.fail(name, true, 0, "", c.ioError(ctx, "send command", err))
	}
	raw, err := readReply(conn, max)
	if len(raw) == 0 || raw[len(raw)-1] != 0 {
		if err == nil || errors.Is(err, io.EOF) {
			err = ErrNoReply
		}
		return "", c.fail(name, true, 0, string(raw), c.ioError(ctx, "read reply", err))
	}
	return string(raw[:len(raw)-1]), nil
}

// Instream streams r to clamd with INSTREAM and returns its verdict.
//
// Content is read from r into a reused buffer and sent in chunks of the
// configured size whatever sizes r yields, so the whole artifact is never
// held. The terminating zero-length chunk is sent only after r reports EOF:
// on a read error, a cancellation or a size limit the stream is abandoned
// unterminated, and clamd never scans (and never answers OK for) a partial
// artifact.
//
// After a write fails the reply is still read: when the stream passes
// clamd's StreamMaxLength, clamd answers "INSTREAM size limit exceeded" and
// closes, and the client's next write fails (EPIPE) with that answer
// waiting to be read.
//
// With Options.Sessions, an artifact that fits in one chunk may go over a
// kept IDSESSION connection (see session.go). With Options.RetryBackoff, a
// refused connection is tried once more before clamd has seen the artifact.
//
// A reply of OK is only returned when the whole content was sent. Every
// failure is an *Error wrapping one of the Err* values, or the context's
// error when ctx ended the call.
func (c *Client) Instream(ctx context.Context, r io.Reader) (Reply, error) {
	const name = "INSTREAM"
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	// The connection comes first, so that a clamd that is down costs
	// nothing of r: the caller can still send it elsewhere.
	s := c.sessions.get()
	if s == nil {
		var err error
		if s, err = c.connect(ctx, name); err != nil {
			return Reply{}, err
		}
	}

	bufp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bufp)
	first, err := c.readFrame(r, *bufp, true, 0)
	if err != nil {
		// Nothing was written: the connection is as good as it was.
		c.sessions.put(s)
		if ctxErr(ctx) != nil {
			return Reply{}, c.ctxError(ctx, name, 0)
		}
		return Reply{}, c.fail(name, true, 0, "", err)
	}
	if s.reused() && !first.last {
		// Only what stays whole in the buffer rides a kept session.
		c.sessions.put(s)
		if s, err = c.connect(ctx, name); err != nil {
			return Reply{}, consumed(err)
		}
	}
	reply, answered, err := c.instream(ctx, s, r, *bufp, first)
	if err != nil && !answered && first.last && s.reused() && ctxErr(ctx) == nil {
		// clamd dropped the kept session while it was idle; the artifact
		// is still whole in the buffer.
		if s, err = c.connect(ctx, name); err != nil {
			return Reply{}, consumed(err)
		}
		reply, _, err = c.instream(ctx, s, nil, *bufp, first)
	}
	return reply, err
}

// frame is one INSTREAM frame, built in a buffer: the command (first frame
// only), a length prefix, a chunk, and the terminator when it is the last.
type frame struct {
	end     int   // the frame is buf[:end]
	content int64 // content bytes in it
	last    bool
}

// readFrame fills buf with the next frame of content from r, after sent
// bytes went before. The first frame carries the command, so that a small
// artifact costs one write: command, one chunk, terminator.
func (c *Client) readFrame(r io.Reader, buf []byte, first bool, sent int64) (frame, error) {
	off := 0
	if first {
		off = copy(buf, cmdInstream)
	}
	var n int
	var rerr error
	if r != nil {
		n, rerr = io.ReadFull(r, buf[off+4:off+4+c.opts.ChunkSize])
	} else {
		rerr = io.EOF
	}
	last := rerr == io.EOF || rerr == io.ErrUnexpectedEOF
	if rerr != nil && !last {
		return frame{}, fmt.Errorf("%w: %w", ErrContent, rerr)
	}
	if max := c.opts.MaxStreamSize; max > 0 && sent+int64(n) > max {
		return frame{}, fmt.Errorf("%w: content is longer than the maximum of %d bytes; the rest was not sent", ErrSizeLimit, max)
	}
	end := off
	if n > 0 {
		binary.BigEndian.PutUint32(buf[off:], uint32(n))
		end = off + 4 + n
	}
	if last {
		binary.BigEndian.PutUint32(buf[end:], 0)
		end += 4
	}
	return frame{end: end, content: int64(n), last: last}, nil
}

// hold ties s to ctx for one command: ctx ending closes its connection,
// which unblocks a read or write in progress. release(keep) puts s back in
// the pool when keep is set and ctx never closed it; a connection the
// context closed, or whose state is in doubt, is closed instead.
func (c *Client) hold(ctx context.Context, s *session) (release func(keep bool)) {
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	return func(keep bool) {
		if stop() && keep {
			c.sessions.put(s)
		} else {
			s.conn.Close()
		}
	}
}

// instream sends the first frame, already in buf, then the rest of r, and
// reads the verdict. answered reports whether clamd said anything at all.
// The session goes back to the pool after a verdict, and is closed after
// anything else.
func (c *Client) instream(ctx context.Context, s *session, r io.Reader, buf []byte, first frame) (_ Reply, answered bool, _ error) {
	const name = "INSTREAM"
	keep := false
	release := c.hold(ctx, s)
	defer func() { release(keep) }()
	if err := c.setDeadline(ctx, s.conn); err != nil {
		return Reply{}, false, c.fail(name, false, 0, "", err)
	}
	s.commands++

	sent, complete, sendErr := c.send(s.conn, r, buf, first)
	if sendErr != nil && !isWriteError(sendErr) {
		// Our side gave up (content read error, our own size cap): no
		// reply is coming for a stream we never finished.
		if ctxErr(ctx) != nil {
			return Reply{}, false, c.ctxError(ctx, name, sent)
		}
		return Reply{}, false, c.fail(name, true, sent, "", sendErr)
	}

	raw, readErr := readReply(s.conn, maxReplySize)
	if ctxErr(ctx) != nil {
		return Reply{}, len(raw) > 0, c.ctxError(ctx, name, sent)
	}
	if len(raw) == 0 {
		// No reply at all: report the first thing that went wrong.
		cause := sendErr
		if cause == nil {
			cause = readErr
		}
		if cause == nil || errors.Is(cause, io.EOF) {
			cause = io.ErrUnexpectedEOF
		}
		return Reply{}, false, c.fail(name, true, sent, "", fmt.Errorf("%w: %w", ErrNoReply, cause))
	}
	body, numbered, err := s.unwrap(raw)
	if err != nil {
		return Reply{}, true, c.fail(name, true, sent, string(bytes.TrimRight(raw, "\x00\n")), err)
	}
	reply, err := ParseReply(body)
	if err != nil {
		if sendErr != nil {
			err = fmt.Errorf("%w (stream interrupted: %v)", err, sendErr)
		}
		return Reply{}, numbered, c.fail(name, true, sent, string(bytes.TrimRight(body, "\x00\n")), err)
	}
	if reply.Status == StatusOK && !complete {
		// clamd cannot have examined what it was never sent.
		return Reply{}, true, c.fail(name, true, sent, reply.Raw,
			fmt.Errorf("%w: OK for an unfinished stream (%v)", ErrProtocol, sendErr))
	}
	keep = complete
	reply.ContentBytes = sent
	if s.kept {
		reply.Session = s.commands // unwrap checked clamd's own number
	}
	return reply, true, nil
}

// writeError marks a failure to write to clamd, as opposed to one on our
// side of the stream; the reply is worth reading after the former only.
type writeError struct{ err error }

func (e writeError) Error() string { return "write to clamd: " + e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

func isWriteError(err error) bool {
	var we writeError
	return errors.As(err, &we)
}

// send writes the first frame, already in buf, and then the rest of r in
// frames through the same buffer, terminator included. It returns how many
// content bytes were sent and whether the terminator was.
func (c *Client) send(conn net.Conn, r io.Reader, buf []byte, f frame) (sent int64, complete bool, err error) {
	for {
		if f.end > 0 {
			if _, err := conn.Write(buf[:f.end]); err != nil {
				return sent, false, writeError{err}
			}
		}
		sent += f.content
		if f.last {
			return sent, true, nil
		}
		if f, err = c.readFrame(r, buf, false, sent); err != nil {
			return sent, false, err
		}
	}
}

// readReply reads up to and including the first NUL, or until the
// connection ends, at most max bytes. It returns what it read even when
// reading fails, since a reply can precede a reset.
func readReply(conn net.Conn, max int) ([]byte, error) {
	buf := make([]byte, 0, 256)
	tmp := make([]byte, 256)
	for {
		n, err := conn.Read(tmp)
		if i := bytes.IndexByte(tmp[:n], 0); i >= 0 {
			return append(buf, tmp[:i+1]...), nil
		}
		buf = append(buf, tmp[:n]...)
		if len(buf) > max {
			return buf[:max], fmt.Errorf("%w: reply longer than %d bytes", ErrProtocol, max)
		}
		if err != nil {
			return buf, err
		}
	}
}

// callContext applies the per-call timeout.
func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.opts.Timeout > 0 {
		return context.WithTimeout(ctx, c.opts.Timeout)
	}
	return context.WithCancel(ctx)
}

// dial opens a connection whose deadline is the context's.
func (c *Client) dial(ctx context.Context, name string) (net.Conn, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, c.fail(name, false, 0, "", err)
	}
	conn, err := c.dialer.DialContext(ctx, c.addr.Network, c.addr.Addr)
	if err != nil {
		if cerr := ctxErr(ctx); cerr != nil {
			return nil, c.fail(name, false, 0, "", fmt.Errorf("%w: %w", cerr, err))
		}
		return nil, c.fail(name, false, 0, "", fmt.Errorf("%w: %w", ErrConnect, err))
	}
	if err := c.setDeadline(ctx, conn); err != nil {
		conn.Close()
		return nil, c.fail(name, false, 0, "", err)
	}
	return conn, nil
}

// setDeadline makes the context's deadline the connection's, or clears a
// deadline a kept session had from its previous call.
func (c *Client) setDeadline(ctx context.Context, conn net.Conn) error {
	dl, _ := ctx.Deadline()
	if err := conn.SetDeadline(dl); err != nil {
		return fmt.Errorf("%w: set deadline: %w", ErrConnect, err)
	}
	return nil
}

// ioError names the context's error when the context is what broke the
// connection (we closed it, or its deadline passed), so callers can tell a
// cancelled call from a failing clamd.
func (c *Client) ioError(ctx context.Context, what string, err error) error {
	if cerr := ctxErr(ctx); cerr != nil {
		return fmt.Errorf("%s: %w", what, cerr)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (c *Client) ctxError(ctx context.Context, name string, sent int64) error {
	return c.fail(name, true, sent, "", ctxErr(ctx))
}

// ctxErr is ctx.Err(), except that it already reports DeadlineExceeded
// when the deadline has passed but the context's timer has not fired yet:
// the connection's deadline (the same instant) can fail a read first.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *Client) fail(name string, sent bool, content int64, reply string, err error) *Error {
	return &Error{Command: name, Address: c.addr.String(), Sent: sent, ContentBytes: content, Reply: reply, Err: err}
}
