package shared

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"

	"github.com/microengine/microengine/shared/proto"
	"github.com/microengine/microengine/shared/rawio"
)

// serveBatches listens on path for batch connections and serves each
// until the listener is closed.
func serveBatches(path string, impl Scanner, logger hclog.Logger) (*net.UnixListener, error) {
	return serveUnixPacket(path, impl, logger, "batches by reference", "batch socket", (*descriptorServer).serveBatchConn)
}

// serveBatchConn scans every artifact of every batch the host sends on
// conn, all at once (on workers), and answers them as they finish. The
// host's close (or a message that is no valid batch) ends the connection:
// the scans under way are cancelled, and every descriptor is closed.
func (s *descriptorServer) serveBatchConn(conn *net.UnixConn) {
	defer conn.Close()
	if err := s.checkPeer(conn); err != nil {
		s.log.Warn("batch connection refused", "error", err)
		return
	}
	out := make(chan batchReply, maxBatch)
	written := make(chan struct{})
	slots := newFileSlots()
	var (
		mu      sync.Mutex
		running = map[uint64]func(){}
		wg      sync.WaitGroup
	)
	go func() {
		defer close(written)
		writeBatchAnswers(conn, out, func() int {
			mu.Lock()
			defer mu.Unlock()
			return len(running)
		}, slots.release)
	}()
	// Scans run on workers that outlive them: a goroutine per scan grew
	// a fresh stack through the scanner's calls every time (stack copies
	// were a visible share of the plugin's CPU on 4 KiB files). A worker
	// is started when none is idle, and all end with the connection.
	jobs := make(chan func())
	run := func(job func()) {
		select {
		case jobs <- job:
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				job()
				for job := range jobs {
					job()
				}
			}()
		}
	}
	buf := make([]byte, maxDescriptorMessage)
	oob := make([]byte, unix.CmsgSpace(4*maxBatch))
	for {
		batch, files, err := readBatchWith(conn, buf, oob, slots.take)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.log.Warn("batch connection closed on a bad message", "error", err)
			}
			break
		}
		mu.Lock()
		for _, id := range batch.Cancel {
			if cancel := running[id]; cancel != nil {
				cancel()
			}
		}
		mu.Unlock()
		for i, h := range batch.Headers {
			f := files[i]
			id := h.RequestId
			mu.Lock()
			_, dup := running[id]
			full := len(running) >= maxBatchInFlight
			if dup || full {
				mu.Unlock()
				msg := fmt.Sprintf("request %d is already under way", id)
				if full {
					msg = fmt.Sprintf("more than %d scans under way on one connection", maxBatchInFlight)
				}
				out <- batchReply{&proto.ScanResponse{RequestId: id, ErrorCode: int32(codes.ResourceExhausted), ErrorMessage: msg}, f}
				continue
			}
			ctx, cancel := scanContext(h)
			running[id] = cancel
			mu.Unlock()
			run(func() {
				resp := s.scanFile(ctx, h, f)
				cancel()
				mu.Lock()
				delete(running, id)
				mu.Unlock()
				resp.RequestId = id
				out <- batchReply{resp, f}
			})
		}
	}
	// The host is gone or misbehaved: nobody waits for these answers.
	mu.Lock()
	for _, cancel := range running {
		cancel()
	}
	mu.Unlock()
	close(jobs)
	wg.Wait()
	close(out)
	<-written
	slots.close()
}

// readBatch reads one batch and the descriptors that came with it, one per
// header. Every descriptor that arrives is either returned or closed here.
func readBatch(conn *net.UnixConn, buf, oob []byte) (*proto.ScanBatch, []*os.File, error) {
	return readBatchWith(conn, buf, oob, func(fd int) *os.File { return os.NewFile(uintptr(fd), "artifact") })
}

// readBatchWith is readBatch making each descriptor's *os.File with file,
// which owns the descriptor from then on.
func readBatchWith(conn *net.UnixConn, buf, oob []byte, file func(fd int) *os.File) (*proto.ScanBatch, []*os.File, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	n, oobn, flags, err := rawio.Recvmsg(rc, buf, oob)
	var fds []int
	if oobn > 0 {
		if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for _, m := range msgs {
				if got, perr := unix.ParseUnixRights(&m); perr == nil {
					fds = append(fds, got...)
				}
			}
		}
	}
	fail := func(err error) (*proto.ScanBatch, []*os.File, error) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, nil, err
	}
	switch {
	case err != nil:
		return fail(err)
	case n == 0:
		return fail(io.EOF)
	case flags&unix.MSG_TRUNC != 0:
		return fail(fmt.Errorf("batch longer than %d bytes", len(buf)))
	case flags&unix.MSG_CTRUNC != 0:
		return fail(fmt.Errorf("more than %d descriptors with one batch", maxBatch))
	}
	batch := &proto.ScanBatch{}
	if err := gproto.Unmarshal(buf[:n], batch); err != nil {
		return fail(fmt.Errorf("decode batch: %w", err))
	}
	if len(fds) != len(batch.Headers) {
		return fail(fmt.Errorf("a batch of %d headers carries %d descriptors", len(batch.Headers), len(fds)))
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = file(fd)
	}
	return batch, files, nil
}

// batchReply is a scan's answer and the descriptor it came with, which
// writeBatchAnswers releases just before it sends the answer (see
// fileSlots: the artifact's file is let go of without a system call
// through package syscall, which would wake the Go runtime's sysmon
// thread once the plugin had sat idle; closes gathered per message of
// answers still woke it ~150 times for 4,000 × 4 KiB files).
type batchReply struct {
	resp *proto.ScanResponse
	file *os.File
}

// batchResponsesField is the field number of ScanBatchResponse.responses
// (scanner.proto; a test holds it to the descriptor).
const batchResponsesField protowire.Number = 1

// writeBatchAnswers sends the answers from out, as many in one message as
// are ready, until out is closed. Once a write fails it only drains out.
// While more than batchBusy scans are under way (running), answers are
// held until batchHold are ready, for at most batchHoldFor: the host has
// a deep pipeline then, and one message of many answers costs it one
// wakeup instead of one per answer.
func writeBatchAnswers(conn *net.UnixConn, out <-chan batchReply, running func() int, release func(*os.File)) {
	rc, err := conn.SyscallConn()
	failed := err != nil
	// The message is built as the answers come: each one's encoding
	// behind its field's tag and length is what proto.Marshal makes of
	// the repeated field, without a second pass over every answer for
	// the sizes (Marshal's on top of the one each answer needs here to
	// be fitted in; protobuf was ~12% of the plugin's CPU on 4 KiB files,
	// the answers' metadata maps the most of it).
	var msg []byte
	var files []*os.File
	size := 0
	flush := func() {
		if len(files) == 0 {
			return
		}
		for i, f := range files {
			release(f)
			files[i] = nil
		}
		files = files[:0]
		if !failed {
			_, err := rawio.Write(rc, msg)
			failed = err != nil
		}
		msg = msg[:0]
		size = 0
	}
	add := func(a batchReply) {
		r := a.resp
		n := gproto.Size(r)
		if n > maxDescriptorMessage-maxFieldOverhead {
			r = &proto.ScanResponse{RequestId: r.RequestId, ErrorCode: int32(codes.ResourceExhausted),
				ErrorMessage: fmt.Sprintf("answer of %d bytes is over the %d-byte limit", n, maxDescriptorMessage)}
			n = gproto.Size(r)
		}
		if size+n+maxFieldOverhead > maxDescriptorMessage || len(files) >= maxBatch {
			flush()
		}
		files = append(files, a.file)
		size += n + maxFieldOverhead
		mark := len(msg)
		msg = protowire.AppendTag(msg, batchResponsesField, protowire.BytesType)
		msg = protowire.AppendVarint(msg, uint64(n))
		var err error
		if msg, err = (gproto.MarshalOptions{UseCachedSize: true}).MarshalAppend(msg, r); err != nil || len(msg)-mark > n+maxFieldOverhead {
			// Not expected of a message Size just measured: the
			// connection is given up rather than sent a bad batch.
			msg = msg[:mark]
			failed = true
		}
	}
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	for r := range out {
		add(r)
		held := false
	gather:
		for {
			select {
			case r, ok := <-out:
				if !ok {
					break gather
				}
				add(r)
				continue
			default:
			}
			if len(files) >= batchHold || running() <= batchBusy {
				break
			}
			if !held {
				held = true
				hold.Reset(batchHoldFor)
			}
			select {
			case r, ok := <-out:
				if !ok {
					break gather
				}
				add(r)
			case <-hold.C:
				held = false
				break gather
			}
		}
		if held {
			hold.Stop()
		}
		flush()
	}
}
