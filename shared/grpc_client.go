package shared

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/microengine/microengine/shared/proto"
)

// GRPCClient is the host's side of the contract: a Scanner that forwards
// every call to a plugin process.
type GRPCClient struct {
	client    proto.ScannerClient
	chunkSize int
	// chunks recycles chunk buffers: at thousands of small scans a second,
	// a fresh chunk-sized buffer per scan is a large share of the host's
	// CPU. A buffer goes back once gRPC has written it (see outgoingChunk).
	chunks *chunkPool
	// sessions carry small artifacts whole; shared by every copy of the
	// client made by WithChunkSize, as they share the connection.
	sessions *sessionPool
	// fds passes artifacts by reference to a plugin that takes them so;
	// shared like sessions. nil in a copy made by WithoutDescriptors.
	fds *descriptorPool
}

func newGRPCClient(c proto.ScannerClient, chunkSize int, sessions *sessionPool, fds *descriptorPool) *GRPCClient {
	return &GRPCClient{client: c, chunkSize: chunkSize, sessions: sessions, fds: fds, chunks: newChunkPool(chunkSize)}
}

var _ Scanner = (*GRPCClient)(nil)

// WithChunkSize returns a client that sends content in chunks of n bytes
// (1..MaxChunkSize). The conformance suite uses it to send odd chunkings.
func (c *GRPCClient) WithChunkSize(n int) *GRPCClient {
	if n < 1 {
		n = 1
	}
	if n > MaxChunkSize {
		n = MaxChunkSize
	}
	return newGRPCClient(c.client, n, c.sessions, c.fds)
}

// WithoutDescriptors returns a client that always streams the content, even
// to a plugin that takes artifacts by reference. The conformance suite uses
// it to check both paths.
func (c *GRPCClient) WithoutDescriptors() *GRPCClient {
	return newGRPCClient(c.client, c.chunkSize, c.sessions, nil)
}

// UseDescriptorSocket names the plugin's descriptor socket (in its private
// socket directory). Artifacts go by reference only once the plugin's Info
// also declares ByReference.
func (c *GRPCClient) UseDescriptorSocket(path string) {
	if c.fds != nil {
		c.fds.path = path
	}
}

// ByReference reports whether scans of artifacts with a File pass it by
// reference: the plugin declared it, and its socket has not failed.
func (c *GRPCClient) ByReference() bool { return c.fds.usable() }

func (c *GRPCClient) Info(ctx context.Context) (Info, error) {
	resp, err := c.client.Info(ctx, &proto.InfoRequest{})
	if err != nil {
		return Info{}, fromStatus("info", err)
	}
	info := infoFromProto(resp)
	c.fds.declare(info.ByReference)
	return info, nil
}

func (c *GRPCClient) Configure(ctx context.Context, configJSON []byte) error {
	resp, err := c.client.Configure(ctx, &proto.ConfigureRequest{ConfigJson: configJSON})
	if err != nil {
		return fromStatus("configure", err)
	}
	if len(resp.Errors) == 0 {
		return nil
	}
	ce := &ConfigError{}
	for _, f := range resp.Errors {
		ce.Fields = append(ce.Fields, FieldError{Field: f.Field, Message: f.Message})
	}
	return ce
}

func (c *GRPCClient) Health(ctx context.Context) (Health, error) {
	resp, err := c.client.Health(ctx, &proto.HealthRequest{})
	if err != nil {
		return Health{}, fromStatus("health", err)
	}
	h := Health{
		Healthy:           resp.Healthy,
		Message:           resp.Message,
		VendorVersion:     resp.VendorVersion,
		SignaturesVersion: resp.SignaturesVersion,
	}
	for _, b := range resp.Backends {
		h.Backends = append(h.Backends, BackendHealth{Name: b.Name, Healthy: b.Healthy, InFlight: b.InFlight})
	}
	return h, nil
}

// Scan streams the artifact's content to the plugin: the header, then
// chunks. A read error on the content cancels the stream, so the plugin
// never mistakes a short read for the end of the artifact.
func (c *GRPCClient) Scan(ctx context.Context, a Artifact) (Result, error) {
	// An open file goes by reference to a plugin that takes it so: no byte
	// crosses, and the plugin's backend may read the file itself.
	if a.File != nil && c.fds.usable() {
		res, err := c.scanDescriptor(ctx, a)
		if !errors.Is(err, errNoDescriptors) {
			return res, err
		}
	}
	// An artifact that fits in one chunk goes whole over a session; the
	// rest, and every artifact of a plugin without sessions, is streamed.
	if a.Size >= 0 && a.Size <= int64(c.chunkSize) && a.Content != nil && c.sessions.enabled() {
		return c.scanInline(ctx, a)
	}
	return c.scanStream(ctx, a)
}

func (c *GRPCClient) scanStream(ctx context.Context, a Artifact) (Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.client.Scan(ctx)
	if err != nil {
		return Result{}, fromStatus("scan", err)
	}
	size := a.Size
	if size < 0 {
		size = -1
	}
	header := &proto.ScanHeader{ArtifactId: a.ID, Type: artifactTypeToProto(a.Type), Size: size, Metadata: a.Metadata, Sha256: a.SHA256}
	if err := stream.Send(&proto.ScanRequest{Msg: &proto.ScanRequest_Header{Header: header}}); err != nil && !errors.Is(err, io.EOF) {
		return Result{}, fromStatus("scan: send header", err)
	}
	if a.Content != nil {
		// A small artifact of known size is read into a buffer one byte
		// larger than itself: a single read then sees its end.
		readSize := c.chunkSize
		if a.Size >= 0 && a.Size < int64(c.chunkSize) {
			readSize = int(a.Size) + 1
		}
		for {
			buf := c.chunks.Get(readSize)
			n, rerr := io.ReadFull(a.Content, *buf)
			if n > 0 {
				if err := c.sendChunk(stream, buf, n); err != nil {
					if errors.Is(err, io.EOF) {
						break // the plugin answered early; CloseAndRecv has its answer
					}
					return Result{}, fromStatus("scan: send chunk", err)
				}
			} else {
				c.chunks.Put(buf)
			}
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				break
			}
			if rerr != nil {
				cancel()
				return Result{}, fmt.Errorf("scan: read artifact content: %w", rerr)
			}
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return Result{}, fromStatus("scan", err)
	}
	return resultFromProto(resp), nil
}

// sendChunk sends the first n bytes of buf, a buffer from c.chunks, which
// goes back to the pool once gRPC has written it.
func (c *GRPCClient) sendChunk(stream grpc.ClientStream, buf *[]byte, n int) error {
	var data mem.Buffer
	if mem.IsBelowBufferPoolingThreshold(n) {
		// mem.NewBuffer would not return so small a buffer to its pool.
		data = mem.SliceBuffer(bytes.Clone((*buf)[:n]))
		c.chunks.Put(buf)
	} else {
		*buf = (*buf)[:n]
		data = mem.NewBuffer(buf, c.chunks)
	}
	defer data.Free()
	return stream.SendMsg(newOutgoingChunk(data))
}

// fromStatus turns a gRPC status back into an error that errors.Is can match
// against context.Canceled and context.DeadlineExceeded.
func fromStatus(call string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", call, err)
	}
	wrap := func(kind error) error {
		if st.Message() == kind.Error() {
			return fmt.Errorf("%s: %w", call, kind)
		}
		return fmt.Errorf("%s: %w: %s", call, kind, st.Message())
	}
	switch st.Code() {
	case codes.Canceled:
		return wrap(context.Canceled)
	case codes.DeadlineExceeded:
		return wrap(context.DeadlineExceeded)
	case codes.Unavailable:
		return wrap(ErrPluginUnavailable)
	}
	return fmt.Errorf("%s: %s: %s", call, st.Code(), st.Message())
}

// ErrPluginUnavailable means the plugin process could not be reached (it
// died, or is being relaunched).
var ErrPluginUnavailable = errors.New("plugin unavailable")

// scanInline reads a small artifact whole and scans it over a session. One
// byte more than announced is read, so an overlong artifact reaches the
// plugin's guard as such.
func (c *GRPCClient) scanInline(ctx context.Context, a Artifact) (Result, error) {
	content := make([]byte, a.Size+1)
	n, err := io.ReadFull(a.Content, content)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return Result{}, fmt.Errorf("scan: read artifact content: %w", err)
	}
	content = content[:n]
	header := &proto.ScanHeader{ArtifactId: a.ID, Type: artifactTypeToProto(a.Type), Size: a.Size, Metadata: a.Metadata, Inline: content, Sha256: a.SHA256}
	if d, ok := ctx.Deadline(); ok {
		header.DeadlineUnixNano = d.UnixNano()
	}
	resp, err := c.sessions.scan(ctx, header)
	if errors.Is(err, errNoSessions) {
		a.Content = bytes.NewReader(content)
		return c.scanStream(ctx, a)
	}
	if err != nil {
		return Result{}, err
	}
	if resp.ErrorCode != 0 {
		return Result{}, fromStatus("scan", status.Error(codes.Code(resp.ErrorCode), resp.ErrorMessage))
	}
	return resultFromProto(resp), nil
}
