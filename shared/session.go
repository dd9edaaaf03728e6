package shared

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/microengine/microengine/shared/proto"
)

// maxIdleSessions bounds the open, unused session streams kept per plugin.
const maxIdleSessions = 32

// errNoSessions means the plugin does not implement ScanSession (it was
// built against an older contract): stream instead.
var errNoSessions = errors.New("plugin has no scan sessions")

// sessionPool keeps ScanSession streams open between scans. A stream
// carries one scan at a time; a scan that fails or is cancelled takes its
// stream down with it (cancelling the stream is how the plugin learns of
// the cancellation), and the next scan opens a new one.
type sessionPool struct {
	client      proto.ScannerClient
	unsupported atomic.Bool
	mu          sync.Mutex
	idle        []*session
}

type session struct {
	stream grpc.BidiStreamingClient[proto.ScanHeader, proto.ScanResponse]
	cancel context.CancelFunc
}

func newSessionPool(c proto.ScannerClient) *sessionPool {
	return &sessionPool{client: c}
}

func (p *sessionPool) enabled() bool { return p != nil && !p.unsupported.Load() }

func (p *sessionPool) get() (*session, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		s := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return s, nil
	}
	p.mu.Unlock()
	// The stream outlives any one scan: its context is its own.
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := p.client.ScanSession(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	return &session{stream: stream, cancel: cancel}, nil
}

func (p *sessionPool) put(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) < maxIdleSessions {
		p.idle = append(p.idle, s)
		return
	}
	s.close()
}

func (s *session) close() {
	_ = s.stream.CloseSend()
	s.cancel()
}

// scan sends one whole artifact and waits for its answer, or for ctx.
func (p *sessionPool) scan(ctx context.Context, h *proto.ScanHeader) (*proto.ScanResponse, error) {
	s, err := p.get()
	if err != nil {
		return nil, fromStatus("scan", err)
	}
	// A cancelled scan cancels its stream: Recv returns, and the plugin's
	// stream context (so its scan) is cancelled too.
	stop := context.AfterFunc(ctx, s.cancel)
	resp, err := func() (*proto.ScanResponse, error) {
		if err := s.stream.Send(h); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		// After a failed Send (io.EOF), Recv has the stream's real status.
		return s.stream.Recv()
	}()
	if !stop() {
		s.close()
		return nil, fromStatus("scan", status.FromContextError(ctx.Err()).Err())
	}
	if err != nil {
		s.close()
		if status.Code(err) == codes.Unimplemented {
			p.unsupported.Store(true)
			return nil, errNoSessions
		}
		return nil, fromStatus("scan", err)
	}
	p.put(s)
	return resp, nil
}
