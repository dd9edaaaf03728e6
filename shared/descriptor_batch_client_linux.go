package shared

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	"github.com/microengine/microengine/shared/proto"
)

// errNoBatches means the plugin has no batch socket (it predates it): the
// artifact goes over the descriptor socket, one scan per connection.
var errNoBatches = errors.New("plugin takes no batches")

// batchRequest is a scan waiting to be sent, or sent and not answered.
type batchRequest struct {
	header *proto.ScanHeader
	// size is the header's encoded size in a ScanBatch.
	size int
	fd   int
	// answer gets the plugin's answer, or the connection's failure.
	answer chan batchAnswer
}

type batchAnswer struct {
	resp *proto.ScanResponse
	err  error
}

// batchConn is the host's connection to a plugin's batch socket, shared by
// every scan by reference of the plugin. Scans queue their requests; a
// writer sends what is queued as one message, a reader hands each answer
// to its scan.
type batchConn struct {
	conn *net.UnixConn
	// writeMu is held while a message is written: a cancelled scan whose
	// request was taken for sending waits on it before closing its
	// descriptor.
	writeMu sync.Mutex
	mu      sync.Mutex
	queue   []*batchRequest
	cancels []uint64
	pending map[uint64]*batchRequest
	nextID  uint64
	// unanswered counts the requests sent and not answered.
	unanswered int
	// err is set once the connection failed; every scan then fails.
	err  error
	wake chan struct{}
	// answered is signalled after each message of answers.
	answered chan struct{}
	done     chan struct{}
}

// batch returns the plugin's batch connection, dialling it when there is
// none, or errNoBatches when the plugin does not listen for batches.
func (p *descriptorPool) batch(ctx context.Context) (*batchConn, error) {
	p.batchMu.Lock()
	defer p.batchMu.Unlock()
	if p.batchConn != nil {
		return p.batchConn, nil
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", filepath.Join(filepath.Dir(p.path), BatchSocketName))
	if err != nil {
		if isNoSocket(err) {
			p.noBatches.Store(true)
			return nil, errNoBatches
		}
		return nil, err
	}
	b := &batchConn{
		conn: conn.(*net.UnixConn), pending: map[uint64]*batchRequest{},
		wake: make(chan struct{}, 1), answered: make(chan struct{}, 1), done: make(chan struct{}),
	}
	go b.write()
	go b.read(func() {
		p.batchMu.Lock()
		if p.batchConn == b {
			p.batchConn = nil
		}
		p.batchMu.Unlock()
	})
	p.batchConn = b
	return b, nil
}

// scanBatched passes fd with header over the batch connection and waits
// for the answer. It returns errNoBatches, before anything was sent, when
// the plugin has no batch socket. fd stays the caller's to close.
func (p *descriptorPool) scanBatched(ctx context.Context, header *proto.ScanHeader, fd int) (*proto.ScanResponse, error) {
	b, err := p.batch(ctx)
	if err != nil {
		if errors.Is(err, errNoBatches) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fromStatus("scan", status.FromContextError(ctx.Err()).Err())
		}
		return nil, fmt.Errorf("scan by reference: %w: %v", ErrPluginUnavailable, err)
	}
	return b.scan(ctx, header, fd)
}

func (b *batchConn) scan(ctx context.Context, header *proto.ScanHeader, fd int) (*proto.ScanResponse, error) {
	req := &batchRequest{header: header, fd: fd, answer: make(chan batchAnswer, 1)}
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return nil, err
	}
	b.nextID++
	header.RequestId = b.nextID
	req.size = gproto.Size(header) + maxFieldOverhead
	if req.size > maxDescriptorMessage {
		b.mu.Unlock()
		return nil, fmt.Errorf("%w: header of %d bytes", errNoDescriptors, req.size)
	}
	b.pending[header.RequestId] = req
	b.queue = append(b.queue, req)
	b.mu.Unlock()
	b.signal()
	select {
	case a := <-req.answer:
		if a.err != nil {
			b.sent()
		}
		return a.resp, a.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	if _, ok := b.pending[header.RequestId]; !ok {
		// Answered (or failed) meanwhile: the answer is in the channel.
		b.mu.Unlock()
		a := <-req.answer
		if a.err == nil {
			return a.resp, nil
		}
		b.sent()
		return nil, fromStatus("scan", status.FromContextError(ctx.Err()).Err())
	}
	delete(b.pending, header.RequestId)
	queued := false
	if i := slices.Index(b.queue, req); i >= 0 {
		b.queue = slices.Delete(b.queue, i, i+1)
		queued = true
	} else {
		b.cancels = append(b.cancels, header.RequestId)
	}
	b.mu.Unlock()
	if !queued {
		b.signal()
		b.sent()
	}
	return nil, fromStatus("scan", status.FromContextError(ctx.Err()).Err())
}

// sent waits until no message is being written. A request the writer took
// may be in the message it is writing, and its descriptor must not be
// closed (its number reused for another file) before the write is over.
// An answered request needs no wait: its message was read.
func (b *batchConn) sent() {
	b.writeMu.Lock()
	//nolint:staticcheck // an empty critical section: it waits for the write
	b.writeMu.Unlock()
}

func (b *batchConn) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// write sends the queued requests and cancels, as few messages as they fit
// in, each time it is woken, until the connection fails.
func (b *batchConn) write() {
	var batch proto.ScanBatch
	var fds []int
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	for {
		select {
		case <-b.wake:
		case <-b.done:
			return
		}
		// A deep pipeline takes what queued with the next answer.
		b.mu.Lock()
		held := b.unanswered >= 2*batchBusy && len(b.queue) < maxBatch && len(b.cancels) == 0
		b.mu.Unlock()
		if held {
			select {
			case <-b.answered:
			default:
				hold.Reset(batchHoldFor)
				select {
				case <-b.answered:
				case <-hold.C:
				case <-b.done:
					return
				}
				hold.Stop()
			}
		}
		b.writeMu.Lock()
		b.mu.Lock()
		for (len(b.queue) > 0 || len(b.cancels) > 0) && b.err == nil {
			batch.Headers, batch.Cancel, fds = batch.Headers[:0], batch.Cancel[:0], fds[:0]
			size := 0
			for len(b.cancels) > 0 && size < maxDescriptorMessage/2 {
				batch.Cancel = append(batch.Cancel, b.cancels[0])
				b.cancels = b.cancels[1:]
				size += maxFieldOverhead
			}
			n := 0
			for _, r := range b.queue {
				if n == maxBatch || size+r.size > maxDescriptorMessage {
					break
				}
				batch.Headers = append(batch.Headers, r.header)
				fds = append(fds, r.fd)
				size += r.size
				n++
			}
			b.queue = b.queue[n:]
			b.mu.Unlock()
			msg, err := gproto.Marshal(&batch)
			if err == nil {
				var oob []byte
				if len(fds) > 0 {
					oob = unix.UnixRights(fds...)
				}
				_, _, err = b.conn.WriteMsgUnix(msg, oob, nil)
			}
			b.mu.Lock()
			if err != nil {
				b.failLocked(err)
			} else {
				b.unanswered += len(batch.Headers)
			}
		}
		if len(b.queue) == 0 {
			b.queue = nil // let a burst's backing array go
		}
		b.mu.Unlock()
		b.writeMu.Unlock()
	}
}

// read hands each answer to its scan until the connection fails; gone is
// called then, so the next scan dials anew.
func (b *batchConn) read(gone func()) {
	buf := make([]byte, maxDescriptorMessage)
	var err error
	for {
		var n, flags int
		n, _, flags, _, err = b.conn.ReadMsgUnix(buf, nil)
		if err == nil && n == 0 {
			err = fmt.Errorf("the plugin closed the connection")
		}
		if err == nil && flags&unix.MSG_TRUNC != 0 {
			err = fmt.Errorf("answer longer than %d bytes", len(buf))
		}
		var resp proto.ScanBatchResponse
		if err == nil {
			if uerr := gproto.Unmarshal(buf[:n], &resp); uerr != nil {
				err = fmt.Errorf("decode answers: %w", uerr)
			}
		}
		if err != nil {
			break
		}
		b.mu.Lock()
		b.unanswered -= len(resp.Responses)
		for _, r := range resp.Responses {
			if req, ok := b.pending[r.RequestId]; ok {
				delete(b.pending, r.RequestId)
				req.answer <- batchAnswer{resp: r}
			}
		}
		b.mu.Unlock()
		select {
		case b.answered <- struct{}{}:
		default:
		}
	}
	gone()
	b.mu.Lock()
	b.failLocked(err)
	b.mu.Unlock()
}

// failLocked fails the connection and every scan waiting on it.
func (b *batchConn) failLocked(err error) {
	if b.err != nil {
		return
	}
	b.err = fmt.Errorf("scan by reference: %w: %v", ErrPluginUnavailable, err)
	for id, req := range b.pending {
		delete(b.pending, id)
		req.answer <- batchAnswer{err: b.err}
	}
	b.queue, b.cancels = nil, nil
	close(b.done)
	b.conn.Close()
}
