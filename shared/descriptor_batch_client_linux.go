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
// every scan by reference of the plugin. Scans queue their requests and
// send what is queued as one message themselves (flush), unless a scan is
// sending already, which then takes theirs too; a reader hands each answer
// to its scan. (A writer goroutine woken for each scan was a goroutine
// switch, often a thread woken, per small file.)
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
	// writing: some goroutine is sending what is queued, and sends
	// whatever is queued before it stops.
	writing bool
	// holding: requests are held back while the pipeline is deep, until
	// the next answer or hold fires.
	holding bool
	hold    *time.Timer
	// batch and fds are the message being built; used while writing.
	batch proto.ScanBatch
	fds   []int
	// err is set once the connection failed; every scan then fails.
	err  error
	done chan struct{}
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
	b := &batchConn{conn: conn.(*net.UnixConn), pending: map[uint64]*batchRequest{}, done: make(chan struct{})}
	b.hold = time.AfterFunc(time.Hour, func() { b.flush(true) })
	b.hold.Stop()
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
	b.flush(false)
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
		b.flush(false)
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

// flush sends the queued requests and cancels, as few messages as they
// fit in, unless another goroutine is sending (it sends them too) or,
// unless forced, the pipeline is deep: at least 2*batchBusy unanswered,
// fewer than maxBatch queued and no cancel. Held requests go with the next
// answer (read calls flush(true)), or when the hold fires, batchHoldFor
// later, or once maxBatch are queued or a cancel is.
func (b *batchConn) flush(force bool) {
	b.mu.Lock()
	if force && b.holding {
		b.holding = false
		b.hold.Stop()
	}
	if b.writing || b.err != nil || (len(b.queue) == 0 && len(b.cancels) == 0) {
		b.mu.Unlock()
		return
	}
	if !force && len(b.queue) < maxBatch && len(b.cancels) == 0 && (b.holding || b.unanswered >= 2*batchBusy) {
		if !b.holding {
			b.holding = true
			b.hold.Reset(batchHoldFor)
		}
		b.mu.Unlock()
		return
	}
	if b.holding {
		b.holding = false
		b.hold.Stop()
	}
	b.writing = true
	b.mu.Unlock()
	b.writeMu.Lock()
	b.mu.Lock()
	for (len(b.queue) > 0 || len(b.cancels) > 0) && b.err == nil {
		batch := &b.batch
		batch.Headers, batch.Cancel, b.fds = batch.Headers[:0], batch.Cancel[:0], b.fds[:0]
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
			b.fds = append(b.fds, r.fd)
			size += r.size
			n++
		}
		b.queue = b.queue[n:]
		b.mu.Unlock()
		msg, err := gproto.Marshal(batch)
		if err == nil {
			var oob []byte
			if len(b.fds) > 0 {
				oob = unix.UnixRights(b.fds...)
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
	b.writing = false
	b.mu.Unlock()
	b.writeMu.Unlock()
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
		// What was held for this answer goes now.
		b.flush(true)
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
	b.hold.Stop()
	close(b.done)
	b.conn.Close()
}
