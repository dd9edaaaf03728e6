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
	"time"

	"golang.org/x/sys/unix"

	"github.com/microengine/microengine/shared/rawio"
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
	// rawio: fstat of an open descriptor returns at once, and through
	// package syscall it would wake the Go runtime's sysmon thread
	// whenever the plugin had sat idle (see package rawio).
	var st unix.Stat_t
	if err := rawio.Fstat(f, &st); err != nil {
		return Reply{}, c.fail(name, false, 0, "", fmt.Errorf("%w: %w", ErrContent, err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Reply{}, c.fail(name, false, 0, "", fmt.Errorf("%w: not a regular file", ErrContent))
	}
	return c.FildesSized(ctx, f, st.Size)
}

// FildesSized is Fildes for a file the caller has just found, with
// fstat, to be a regular file of size bytes (a plugin's descriptor server
// does so for every artifact by reference): Fildes's own fstat was the
// third of a small artifact's, ~2% of the plugin's CPU on 4 KiB files.
func (c *Client) FildesSized(ctx context.Context, f *os.File, size int64) (Reply, error) {
	const name = "FILDES"
	if !c.CanFildes() {
		return Reply{}, c.fail(name, false, 0, "", ErrNoFildes)
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	if c.opts.Sessions > 0 {
		reply, err := c.fildesPiped(ctx, f, size)
		if !errors.Is(err, errPipeClosed) {
			return reply, err
		}
	}
	s := c.sessions.get()
	if s == nil {
		var err error
		if s, err = c.connect(ctx, name); err != nil {
			return Reply{}, err
		}
	}
	reused := s.reused()
	reply, answered, err := c.fildes(ctx, s, f, size)
	if err != nil && !answered && reused && ctxErr(ctx) == nil {
		// clamd dropped the kept session while it sat idle.
		if s, err = c.connect(ctx, name); err != nil {
			return Reply{}, err
		}
		reply, _, err = c.fildes(ctx, s, f, size)
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
	if err := sendFildes(ctx, uc, f); err != nil {
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

// fildesMessage is FILDES and the byte that carries its descriptor, in one
// message. clamd reads the command, and when the byte after it has come
// too takes the descriptor that came with the bytes (as it does for
// clamdscan's two writes, "zFILDES\0" then the byte). One sendmsg instead
// of two: one system call less for us per artifact, one read less for
// clamd, and the command cannot go out half (a 9-byte message on a unix
// stream socket is one buffer, queued whole or not at all), so a scan
// cancelled while it waits to send leaves the connection as it was.
const fildesMessage = cmdFildes + "\x00"

// sendFildes sends FILDES with f's descriptor on conn. When conn's buffer
// is full (clamd not reading), it waits until there is room or ctx ends.
// An error means nothing was sent: the message is sent whole or not at
// all.
func sendFildes(ctx context.Context, conn *net.UnixConn, f *os.File) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("send FILDES: %w", err)
	}
	fc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("descriptor: %w", err)
	}
	var serr error
	if err := fc.Control(func(fd uintptr) {
		oob := syscall.UnixRights(int(fd))
		if serr = rawio.TrySendmsg(rc, []byte(fildesMessage), oob); errors.Is(serr, syscall.EAGAIN) {
			serr = sendWaiting(ctx, conn, rc, oob)
		}
	}); err != nil {
		return fmt.Errorf("descriptor: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("send FILDES: %w", serr)
	}
	return nil
}

// sendWaiting sends FILDES once conn has room, giving up when ctx ends:
// its deadline and its cancel become conn's write deadline for the time
// of the call, and conn has none after it.
func sendWaiting(ctx context.Context, conn *net.UnixConn, rc syscall.RawConn, oob []byte) error {
	dl, _ := ctx.Deadline()
	if err := conn.SetWriteDeadline(dl); err != nil {
		return err
	}
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = conn.SetWriteDeadline(time.Unix(1, 0))
		close(interrupted)
	})
	err := rawio.Sendmsg(rc, []byte(fildesMessage), oob)
	if !stop() {
		// The deadline is moved, or about to be: wait for it, so that
		// it is not left on conn for the next command.
		<-interrupted
		if err != nil {
			err = errors.Join(err, ctx.Err())
		}
	}
	if derr := conn.SetWriteDeadline(time.Time{}); err == nil {
		err = derr
	}
	return err
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
