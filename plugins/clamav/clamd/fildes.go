package clamd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// FILDES: clamd scans a file we opened, read through the descriptor we
// pass it over its unix socket (SCM_RIGHTS), as `clamdscan --fdpass` does.
// Nothing is streamed and clamd spools nothing to a temp file: INSTREAM
// costs a copy into clamd and a write to its TemporaryDirectory before
// the scan even starts.

const cmdFildes = "zFILDES\x00"

// ErrNoFildes means clamd cannot take a descriptor: it is reached over
// TCP (descriptors only cross a unix socket). Stream with Instream.
var ErrNoFildes = errors.New("clamd is not on a unix socket: no descriptor passing")

// CanFildes reports whether this client's clamd can take descriptors.
func (c *Client) CanFildes() bool { return c.addr.Network == "unix" }

// Fildes asks clamd to scan the open file f by its descriptor. clamd reads
// the file itself, from its start to its end as it is when clamd reads it;
// Reply.ContentBytes is its size when the call began. f must be a regular
// file clamd's user can read through the descriptor (no path is involved,
// so file permissions and folders do not matter).
//
// With Options.Sessions the command rides the client's pipe, an
// IDSESSION connection shared by every FILDES in flight (see pipe.go),
// resent once on a new connection when clamd dropped the one that had
// been used before (the descriptor, unlike a stream, can always be sent
// again). With
// Options.RetryBackoff, a refused connection is tried once more. Every
// failure is an *Error wrapping one of the Err* values, or the context's
// error when ctx ended the call.
func (c *Client) Fildes(ctx context.Context, f *os.File) (Reply, error) {
	const name = "FILDES"
	if !c.CanFildes() {
		return Reply{}, c.fail(name, false, 0, "", ErrNoFildes)
	}
	st, err := f.Stat()
	if err != nil {
		return Reply{}, c.fail(name, false, 0, "", fmt.Errorf("%w: %w", ErrContent, err))
	}
	if !st.Mode().IsRegular() {
		return Reply{}, c.fail(name, false, 0, "", fmt.Errorf("%w: not a regular file", ErrContent))
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	if c.opts.Sessions > 0 {
		reply, err := c.fildesPiped(ctx, f, st.Size())
		if !errors.Is(err, errPipeClosed) {
			return reply, err
		}
	}
	s := c.sessions.get()
	if s == nil {
		if s, err = c.connect(ctx, name); err != nil {
			return Reply{}, err
		}
	}
	reused := s.reused()
	reply, answered, err := c.fildes(ctx, s, f, st.Size())
	if err != nil && !answered && reused && ctxErr(ctx) == nil {
		// clamd dropped the kept session while it sat idle.
		if s, err = c.connect(ctx, name); err != nil {
			return Reply{}, err
		}
		reply, _, err = c.fildes(ctx, s, f, st.Size())
	}
	return reply, err
}

// fildes sends the command and the descriptor on s and reads the verdict.
// answered reports whether clamd said anything at all. The session goes
// back to the pool after a verdict and is closed after anything else.
func (c *Client) fildes(ctx context.Context, s *session, f *os.File, size int64) (_ Reply, answered bool, _ error) {
	const name = "FILDES"
	keep := false
	release := c.hold(ctx, s)
	defer func() { release(keep) }()
	if err := c.setDeadline(ctx, s.conn); err != nil {
		return Reply{}, false, c.fail(name, false, 0, "", err)
	}
	uc, ok := s.conn.(*net.UnixConn)
	if !ok {
		return Reply{}, false, c.fail(name, false, 0, "", ErrNoFildes)
	}
	s.commands++
	if _, err := sendFildes(uc, f, nil); err != nil {
		if ctxErr(ctx) != nil {
			return Reply{}, false, c.ctxError(ctx, name, 0)
		}
		return Reply{}, false, c.fail(name, false, 0, "", fmt.Errorf("%w: %w", ErrConnect, err))
	}
	raw, readErr := readReply(s.conn, maxReplySize)
	if ctxErr(ctx) != nil {
		return Reply{}, len(raw) > 0, c.ctxError(ctx, name, 0)
	}
	if len(raw) == 0 {
		if readErr == nil || errors.Is(readErr, io.EOF) {
			readErr = io.ErrUnexpectedEOF
		}
		return Reply{}, false, c.fail(name, true, 0, "", fmt.Errorf("%w: %w", ErrNoReply, readErr))
	}
	body, numbered, err := s.unwrap(raw)
	if err != nil {
		return Reply{}, true, c.fail(name, true, 0, string(bytes.TrimRight(raw, "\x00\n")), err)
	}
	reply, err := ParseFildesReply(body)
	if err != nil {
		return Reply{}, numbered, c.fail(name, true, 0, string(bytes.TrimRight(body, "\x00\n")), err)
	}
	keep = true
	reply.ContentBytes = size
	if s.kept {
		reply.Session = s.commands
	}
	return reply, true, nil
}

// sendFildes writes the command, then one byte carrying the descriptor, as
// clamdscan does: clamd takes the descriptor that arrives after FILDES.
// started reports whether any byte of it was written: a failure before
// that left the connection as it was. between, when not nil, is called
// once the command is written, before the descriptor.
func sendFildes(conn *net.UnixConn, f *os.File, between func()) (started bool, _ error) {
	if n, err := io.WriteString(conn, cmdFildes); err != nil {
		return n > 0, fmt.Errorf("send FILDES: %w", err)
	}
	if between != nil {
		between()
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return true, fmt.Errorf("descriptor: %w", err)
	}
	var werr error
	if err := rc.Control(func(fd uintptr) {
		_, _, werr = conn.WriteMsgUnix([]byte{0}, syscall.UnixRights(int(fd)), nil)
	}); err != nil {
		return true, fmt.Errorf("descriptor: %w", err)
	}
	if werr != nil {
		return true, fmt.Errorf("send descriptor: %w", werr)
	}
	return true, nil
}

// ParseFildesReply reads the reply to FILDES, as received: clamd names
// the descriptor as it received it ("fd[12]: OK", "fd[12]: NAME FOUND")
// where INSTREAM says "stream: "; the rest is read by ParseReply's rules.
func ParseFildesReply(raw []byte) (Reply, error) {
	text := string(raw)
	if rest, ok := strings.CutPrefix(text, "fd["); ok {
		if i := strings.Index(rest, "]: "); i > 0 {
			if _, err := strconv.Atoi(rest[:i]); err == nil {
				r, err := ParseReply([]byte(streamPrefix + rest[i+3:]))
				if err == nil {
					r.Raw = strings.TrimRight(text, "\x00")
				}
				return r, err
			}
		}
	}
	// Size limits, read timeouts and malformed replies read the same.
	return ParseReply(raw)
}
