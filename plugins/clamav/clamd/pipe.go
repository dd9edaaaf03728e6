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
	"sync"
	"time"

	"github.com/microengine/microengine/shared/rawio"
)

// Pipelined FILDES. A FILDES command is one small message and its reply
// one short line, so one kept connection can carry many at once, as
// `clamdscan --fdpass -m` does: the commands go out on one IDSESSION
// connection as they come, clamd scans them on its threads, and answers
// each as it is done, prefixed with the command's number in the session
// ("7: fd[12]: OK"), in whatever order the scans end. One reader takes
// every answer and hands it to the scan that waits for that number. A
// connection per scan in flight cost each scan its own wakeup, read and
// poll registration on our side and a poll entry on clamd's.
//
// A command is one message, "zFILDES\0" and one byte carrying the
// descriptor (see fildesMessage). Writes are serialised so that command
// numbers follow the order clamd reads the commands in.
//
// A pipe that fails (clamd hung up, an answer out of step, a write that
// did not finish) fails every scan waiting on it; those whose command was
// sent on a pipe that had been used before are resent once on a new one:
// a descriptor can always be sent again, and clamd drops a session after
// its idle timeout.

// pipe is one IDSESSION connection carrying FILDES commands.
type pipe struct {
	conn *net.UnixConn
	// wmu keeps commands in the order of their numbers.
	wmu     sync.Mutex
	mu      sync.Mutex
	sent    int // commands sent (clamd numbers them from 1)
	waiting map[int]chan pipeAnswer
	err     error
	// idleSince is when the last answer came with nothing in flight.
	idleSince time.Time
	// closeIdle: close once nothing is in flight (the client was closed).
	closeIdle bool
}

type pipeAnswer struct {
	raw []byte
	err error
}

// pipeFor returns the client's pipe, opening one when there is none or
// the one there failed or sat idle longer than sessionMaxIdle. fresh
// reports a pipe opened by this call.
func (c *Client) pipeFor(ctx context.Context, name string) (p *pipe, fresh bool, err error) {
	c.pipeMu.Lock()
	defer c.pipeMu.Unlock()
	if p := c.pipe; p != nil {
		p.mu.Lock()
		usable := p.err == nil && (len(p.waiting) > 0 || time.Since(p.idleSince) < sessionMaxIdle)
		p.mu.Unlock()
		if usable {
			return p, false, nil
		}
		p.close(errors.New("replaced"))
		c.pipe = nil
	}
	if c.pipeClosed {
		return nil, false, errPipeClosed
	}
	s, err := c.connect(ctx, name)
	if err != nil {
		return nil, false, err
	}
	uc, ok := s.conn.(*net.UnixConn)
	if !ok {
		s.conn.Close()
		return nil, false, c.fail(name, false, 0, "", ErrNoFildes)
	}
	// The pipe outlives this call: no deadline of its own. Each scan
	// waits for its answer within its own context.
	if err := uc.SetDeadline(time.Time{}); err != nil {
		uc.Close()
		return nil, false, c.fail(name, false, 0, "", fmt.Errorf("%w: %w", ErrConnect, err))
	}
	p = &pipe{conn: uc, waiting: map[int]chan pipeAnswer{}, idleSince: time.Now()}
	go p.read()
	c.pipe = p
	return p, true, nil
}

// errPipeClosed: the client was closed; FILDES opens a connection per call.
var errPipeClosed = errors.New("pipe closed")

// closePipe hangs up the pipe once the scans on it are answered: a scan
// runs to its end on the client it started with.
func (c *Client) closePipe() {
	c.pipeMu.Lock()
	defer c.pipeMu.Unlock()
	c.pipeClosed = true
	if p := c.pipe; p != nil {
		c.pipe = nil
		p.mu.Lock()
		p.closeIdle = true
		idle := len(p.waiting) == 0
		p.mu.Unlock()
		if idle {
			p.close(errPipeClosed)
		}
	}
}

// fildesPiped is Fildes on the client's pipe.
func (c *Client) fildesPiped(ctx context.Context, f *os.File, size int64) (Reply, error) {
	const name = "FILDES"
	p, fresh, err := c.pipeFor(ctx, name)
	if err != nil {
		return Reply{}, err
	}
	reply, answered, err := c.fildesOn(ctx, p, f, size)
	if err != nil && !answered && !fresh && ctxErr(ctx) == nil {
		// The pipe had been used before: clamd may have dropped it.
		if p, _, err = c.pipeFor(ctx, name); err != nil {
			return Reply{}, err
		}
		reply, _, err = c.fildesOn(ctx, p, f, size)
	}
	return reply, err
}

// fildesOn sends one FILDES on p and waits for its answer. answered
// reports whether clamd said anything to this command.
func (c *Client) fildesOn(ctx context.Context, p *pipe, f *os.File, size int64) (_ Reply, answered bool, _ error) {
	const name = "FILDES"
	ch := make(chan pipeAnswer, 1)
	n, err := p.send(ctx, f, ch)
	if err != nil {
		if ctxErr(ctx) != nil {
			return Reply{}, false, c.ctxError(ctx, name, 0)
		}
		return Reply{}, false, c.fail(name, false, 0, "", fmt.Errorf("%w: %w", ErrConnect, err))
	}
	var a pipeAnswer
	select {
	case a = <-ch:
	case <-ctx.Done():
		p.forget(n)
		return Reply{}, false, c.ctxError(ctx, name, 0)
	}
	if a.err != nil {
		if ctxErr(ctx) != nil {
			return Reply{}, false, c.ctxError(ctx, name, 0)
		}
		return Reply{}, false, c.fail(name, true, 0, "", fmt.Errorf("%w: %w", ErrNoReply, a.err))
	}
	reply, err := ParseFildesReply(a.raw)
	if err != nil {
		return Reply{}, true, c.fail(name, true, 0, string(bytes.TrimRight(a.raw, "\x00\n")), err)
	}
	reply.ContentBytes = size
	reply.Session = n
	return reply, true, nil
}

// send writes one FILDES and its descriptor, and registers ch for the
// answer. It returns the command's number. The command goes out whole or
// not at all (see fildesMessage): a scan whose context ends while it
// waits to send gives its number back and leaves the pipe to the others
// (failing it failed every scan on it: with a fifth of 1,200 scans
// cancelled at random, 10-30 of the others failed with "clamd sent no
// reply: context canceled"). Any other failure to send fails the pipe.
func (p *pipe) send(ctx context.Context, f *os.File, ch chan pipeAnswer) (int, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		return 0, err
	}
	p.sent++
	n := p.sent
	p.waiting[n] = ch
	p.mu.Unlock()
	err := sendFildes(ctx, p.conn, f)
	if err != nil && ctx.Err() != nil {
		// clamd never saw command n: its number is given back.
		p.mu.Lock()
		delete(p.waiting, n)
		p.sent--
		closing := p.noteIdleLocked()
		p.mu.Unlock()
		if closing {
			p.close(errPipeClosed)
		}
		return 0, err
	}
	if err != nil {
		p.close(err)
		return n, err
	}
	return n, nil
}

// noteIdleLocked records when the pipe last had no scan waiting, and
// says whether it must now close (Close was asked while scans waited).
// Under p.mu.
func (p *pipe) noteIdleLocked() bool {
	if len(p.waiting) != 0 {
		return false
	}
	p.idleSince = time.Now()
	return p.closeIdle
}

// forget drops the wait for command n, whose scan gave up; its answer is
// read and discarded when it comes.
func (p *pipe) forget(n int) {
	p.mu.Lock()
	delete(p.waiting, n)
	closing := p.noteIdleLocked()
	p.mu.Unlock()
	if closing {
		p.close(errPipeClosed)
	}
}

// read hands each answer to the scan that waits for it, until the pipe
// fails.
func (p *pipe) read() {
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	rc, err := p.conn.SyscallConn()
	if err != nil {
		p.close(err)
		return
	}
	for {
		// Every answer already there is taken in one read.
		k, err := rawio.Read(rc, tmp)
		if err == nil && k == 0 {
			err = io.EOF
		}
		buf = append(buf, tmp[:k]...)
		for {
			i := bytes.IndexByte(buf, 0)
			if i < 0 {
				break
			}
			if perr := p.deliver(buf[:i+1]); perr != nil {
				p.close(perr)
				return
			}
			buf = buf[:copy(buf, buf[i+1:])]
		}
		if len(buf) > maxReplySize {
			p.close(fmt.Errorf("%w: reply longer than %d bytes", ErrProtocol, maxReplySize))
			return
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			p.close(err)
			return
		}
	}
}

// deliver passes one reply, "N: answer\0", to command N's scan. A reply
// without a number is clamd's notice about the session itself (COMMAND
// READ TIMED OUT): the pipe is done.
func (p *pipe) deliver(raw []byte) error {
	i := bytes.Index(raw, []byte(": "))
	if i <= 0 {
		return fmt.Errorf("%w: %s", ErrProtocol, quote(raw))
	}
	n, err := strconv.Atoi(string(raw[:i]))
	if err != nil {
		return fmt.Errorf("%w: %s", ErrProtocol, quote(raw))
	}
	p.mu.Lock()
	if n < 1 || n > p.sent {
		p.mu.Unlock()
		return fmt.Errorf("%w: reply %s answers command %d, and %d were sent", ErrProtocol, quote(raw), n, p.sent)
	}
	if ch, ok := p.waiting[n]; ok {
		delete(p.waiting, n)
		ch <- pipeAnswer{raw: bytes.Clone(raw[i+2:])}
	}
	closing := p.noteIdleLocked()
	p.mu.Unlock()
	if closing {
		p.close(errPipeClosed)
	}
	return nil
}

// close fails the pipe and every scan waiting on it.
func (p *pipe) close(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return
	}
	p.err = err
	for n, ch := range p.waiting {
		delete(p.waiting, n)
		ch <- pipeAnswer{err: err}
	}
	p.conn.Close()
}
