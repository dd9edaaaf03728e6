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
}

// Client talks to one clamd. It is safe for concurrent use; each call opens
// its own connection.
type Client struct {
	addr   Address
	opts   Options
	dialer net.Dialer
	// bufs recycles INSTREAM frame buffers, so a busy scanner does not
	// allocate a chunk per scan.
	bufs sync.Pool
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
	c := &Client{addr: addr, opts: opts, dialer: net.Dialer{Timeout: opts.DialTimeout}}
	// One frame: the INSTREAM command (first frame only), a length
	// prefix, a chunk, and the zero-length terminator when it is the last.
	frameSize := len(cmdInstream) + 4 + opts.ChunkSize + 4
	c.bufs.New = func() any {
		b := make([]byte, frameSize)
		return &b
	}
	return c, nil
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
)

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
// A reply of OK is only returned when the whole content was sent. Every
// failure is an *Error wrapping one of the Err* values, or the context's
// error when ctx ended the call.
func (c *Client) Instream(ctx context.Context, r io.Reader) (Reply, error) {
	const name = "INSTREAM"
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	conn, err := c.dial(ctx, name)
	if err != nil {
		return Reply{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	bufp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bufp)
	sent, complete, sendErr := c.send(conn, r, *bufp)
	if sendErr != nil && !isWriteError(sendErr) {
		// Our side gave up (content read error, our own size cap): no
		// reply is coming for a stream we never finished.
		if ctxErr(ctx) != nil {
			return Reply{}, c.ctxError(ctx, name, sent)
		}
		return Reply{}, c.fail(name, true, sent, "", sendErr)
	}

	raw, readErr := readReply(conn, maxReplySize)
	if ctxErr(ctx) != nil {
		return Reply{}, c.ctxError(ctx, name, sent)
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
		return Reply{}, c.fail(name, true, sent, "", fmt.Errorf("%w: %w", ErrNoReply, cause))
	}
	reply, err := ParseReply(raw)
	if err != nil {
		if sendErr != nil {
			err = fmt.Errorf("%w (stream interrupted: %v)", err, sendErr)
		}
		return Reply{}, c.fail(name, true, sent, string(bytes.TrimRight(raw, "\x00\n")), err)
	}
	if reply.Status == StatusOK && !complete {
		// clamd cannot have examined what it was never sent.
		return Reply{}, c.fail(name, true, sent, reply.Raw,
			fmt.Errorf("%w: OK for an unfinished stream (%v)", ErrProtocol, sendErr))
	}
	reply.ContentBytes = sent
	return reply, nil
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

// send writes the INSTREAM command, the content in frames, and the
// terminator. It returns how many content bytes were sent and whether the
// terminator was.
func (c *Client) send(conn net.Conn, r io.Reader, buf []byte) (sent int64, complete bool, err error) {
	chunk := c.opts.ChunkSize
	// The command rides in the first frame, so a small artifact costs one
	// write: command, one chunk, terminator.
	off := copy(buf, cmdInstream)
	for {
		var n int
		var rerr error
		if r != nil {
			n, rerr = io.ReadFull(r, buf[off+4:off+4+chunk])
		} else {
			rerr = io.EOF
		}
		last := rerr == io.EOF || rerr == io.ErrUnexpectedEOF
		if rerr != nil && !last {
			return sent, false, fmt.Errorf("%w: %w", ErrContent, rerr)
		}
		if max := c.opts.MaxStreamSize; max > 0 && sent+int64(n) > max {
			return sent, false, fmt.Errorf("%w: content is longer than the maximum of %d bytes; the rest was not sent", ErrSizeLimit, max)
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
		if end > 0 {
			if _, err := conn.Write(buf[:end]); err != nil {
				return sent, false, writeError{err}
			}
		}
		sent += int64(n)
		if last {
			return sent, true, nil
		}
		off = 0
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
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			conn.Close()
			return nil, c.fail(name, false, 0, "", fmt.Errorf("%w: set deadline: %w", ErrConnect, err))
		}
	}
	return conn, nil
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
