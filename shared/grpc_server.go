package shared

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/microengine/microengine/shared/proto"
)

// grpcServer is the plugin's side of the contract: it turns gRPC calls into
// Scanner calls and guards the verdict rule on the way out.
type grpcServer struct {
	proto.UnimplementedScannerServer
	impl Scanner
	// descriptors is true when Serve listens for artifacts by reference:
	// only then is a plugin's ByReference declared to the host.
	descriptors bool
}

func (s *grpcServer) Info(ctx context.Context, _ *proto.InfoRequest) (*proto.InfoResponse, error) {
	info, err := s.impl.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := infoToProto(info)
	resp.Descriptors = info.ByReference && s.descriptors
	return resp, nil
}

func (s *grpcServer) Configure(ctx context.Context, req *proto.ConfigureRequest) (*proto.ConfigureResponse, error) {
	err := s.impl.Configure(ctx, req.ConfigJson)
	var ce *ConfigError
	switch {
	case err == nil:
		return &proto.ConfigureResponse{}, nil
	case errors.As(err, &ce):
		resp := &proto.ConfigureResponse{}
		for _, f := range ce.Fields {
			resp.Errors = append(resp.Errors, &proto.FieldError{Field: f.Field, Message: f.Message})
		}
		return resp, nil
	default:
		// Not a fault in the config (the plugin failed to apply it): an
		// error, so the host does not blame a line of engine.hcl.
		return nil, toStatus(err)
	}
}

func (s *grpcServer) Health(ctx context.Context, _ *proto.HealthRequest) (*proto.HealthResponse, error) {
	h, err := s.impl.Health(ctx)
	if err != nil {
		return &proto.HealthResponse{Healthy: false, Message: err.Error()}, nil
	}
	resp := &proto.HealthResponse{
		Healthy: h.Healthy, Message: h.Message,
		VendorVersion: h.VendorVersion, SignaturesVersion: h.SignaturesVersion,
	}
	for _, b := range h.Backends {
		resp.Backends = append(resp.Backends, &proto.BackendHealth{Name: b.Name, Healthy: b.Healthy, InFlight: b.InFlight})
	}
	return resp, nil
}

func (s *grpcServer) Scan(stream proto.Scanner_ScanServer) error {
	first := newIncomingRequest()
	if err := stream.RecvMsg(first); err != nil {
		return toStatus(fmt.Errorf("receive header: %w", err))
	}
	header := first.GetHeader()
	if header == nil {
		if first.chunk != nil {
			first.chunk.Close()
		}
		return status.Error(codes.InvalidArgument, "the first message of a scan must be its header")
	}
	ctx := stream.Context()
	content := &chunkReader{size: header.Size, recv: func() (*incomingRequest, error) {
		msg := newIncomingRequest()
		return msg, stream.RecvMsg(msg)
	}}
	defer content.release()
	a := Artifact{
		ID:       header.ArtifactId,
		Type:     artifactTypeFromProto(header.Type),
		Size:     header.Size,
		Metadata: header.Metadata,
		Content:  content,
		SHA256:   header.Sha256,
	}
	res, err := s.impl.Scan(ctx, a)
	if err != nil {
		return toStatus(err)
	}
	res = guardResult(res, content)
	return stream.SendAndClose(resultToProto(res))
}

func (s *grpcServer) ScanSession(stream proto.Scanner_ScanSessionServer) error {
	for {
		header, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return toStatus(fmt.Errorf("receive header: %w", err))
		}
		if err := stream.Send(s.scanInline(stream.Context(), header)); err != nil {
			return toStatus(fmt.Errorf("send answer: %w", err))
		}
	}
}

// scanInline scans one whole artifact of a session. The content goes
// through the same reader and guard as a streamed one, so a header whose
// size does not match its content cannot pass as benign.
func (s *grpcServer) scanInline(ctx context.Context, h *proto.ScanHeader) *proto.ScanResponse {
	if h.DeadlineUnixNano > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, time.Unix(0, h.DeadlineUnixNano))
		defer cancel()
	}
	sent := false
	content := &chunkReader{size: h.Size, recv: func() (*incomingRequest, error) {
		if sent {
			return nil, io.EOF
		}
		sent = true
		return &incomingRequest{ScanRequest: &proto.ScanRequest{Msg: &proto.ScanRequest_Chunk{Chunk: h.Inline}}}, nil
	}}
	res, err := s.impl.Scan(ctx, Artifact{
		ID: h.ArtifactId, Type: artifactTypeFromProto(h.Type), Size: h.Size, Metadata: h.Metadata, Content: content,
		SHA256: h.Sha256,
	})
	if err != nil {
		st := status.Convert(toStatus(err))
		return &proto.ScanResponse{ErrorCode: int32(st.Code()), ErrorMessage: st.Message()}
	}
	return resultToProto(guardResult(res, content))
}

// guardResult enforces the verdict rule at the boundary, whatever the
// scanner did: a benign answer is a claim that the whole artifact was
// examined, so it stands only when the stream was read to its end and held
// exactly the announced number of bytes.
func guardResult(r Result, content *chunkReader) Result {
	if r = checkVerdict(r); r.Verdict != VerdictBenign {
		return r
	}
	if !content.eof {
		// The scanner decided early (e.g. a strict format check). Read the
		// rest so a truncated or overlong stream cannot pass as benign.
		if _, err := io.Copy(io.Discard, content); err != nil {
			return Unknown("content stream failed: %v", err)
		}
	}
	if content.err != nil && content.err != io.EOF {
		return Unknown("content stream failed: %v", content.err)
	}
	return r
}

// checkVerdict is every guard's first step: an invalid verdict answers
// unknown, and the confidence is clamped.
func checkVerdict(r Result) Result {
	switch r.Verdict {
	case VerdictMalicious, VerdictBenign, VerdictSuspicious, VerdictUnknown:
	default:
		return Unknown("scanner answered an invalid verdict %q", r.Verdict)
	}
	r.Confidence = ClampConfidence(r.Confidence)
	return r
}

// ErrStreamLength means a content stream did not hold the number of bytes
// its header announced.
var ErrStreamLength = errors.New("content length does not match the announced size")

// chunkReader reads an artifact's content from the scan stream, one chunk
// message at a time, without holding more than one chunk. A chunk is
// copied once, from gRPC's receive buffers into p (see contentCodec).
type chunkReader struct {
	recv func() (*incomingRequest, error)
	// The rest of the current chunk: in gRPC's buffers (wire), or decoded
	// (buf).
	wire *mem.Reader
	buf  []byte
	n    int64
	size int64
	err  error
	eof  bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for r.wire == nil && len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		msg, err := r.recv()
		switch {
		case err == io.EOF:
			r.eof = true
			r.err = io.EOF
			if r.size >= 0 && r.n != r.size {
				r.err = fmt.Errorf("%w: stream ended after %d of %d bytes", ErrStreamLength, r.n, r.size)
			}
		case err != nil:
			r.err = fmt.Errorf("receive chunk: %w", err)
		case msg.chunk != nil:
			r.wire = msg.chunk
		case msg.GetHeader() != nil:
			r.err = errors.New("receive chunk: a second header arrived mid-stream")
		default:
			r.buf = msg.GetChunk()
		}
	}
	var n int
	if r.wire != nil {
		n, _ = r.wire.Read(p)
		if r.wire.Remaining() == 0 {
			r.release()
		}
	} else {
		n = copy(p, r.buf)
		r.buf = r.buf[n:]
	}
	r.n += int64(n)
	if r.size >= 0 && r.n > r.size {
		r.err = fmt.Errorf("%w: more than the announced %d bytes", ErrStreamLength, r.size)
		return n, r.err
	}
	return n, nil
}

// release gives back the gRPC buffers the reader still holds: the empty
// rest of a chunk read to its end, or all of one the scan left unread.
func (r *chunkReader) release() {
	if r.wire != nil {
		r.wire.Close()
		r.wire = nil
	}
}

func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
