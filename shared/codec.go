package shared

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/microengine/microengine/shared/proto"
)

// Content chunks cross the plugin boundary without the copies gRPC's proto
// codec makes. That codec marshals each chunk into a fresh, zeroed buffer
// on the host, and on the plugin joins the frames of a message into one
// buffer and then copies the bytes field out of it into another. Into a
// clamd that discarded what it got, those passes held host → plugin to
// ~370 MB/s against ~470 without them (two cores, TLS on), and it is the
// transfer that counts: clamd starts scanning after the last byte.
//
// contentCodec speaks the same wire format (a chunk is an ordinary
// ScanRequest), so either side may use gRPC's codec instead: it treats
// only outgoingChunk and incomingRequest specially, and gRPC's own codec
// handles them through the ScanRequest they embed.
//
// It rests on gRPC APIs marked experimental (the mem package,
// ForceCodecV2, ForceServerCodecV2): after a gRPC upgrade, codec_test.go
// says whether they still behave.
type contentCodec struct {
	proto encoding.CodecV2
}

func newContentCodec() contentCodec {
	return contentCodec{proto: encoding.GetCodecV2(grpcproto.Name)}
}

// Name is gRPC's proto codec's: the content type on the wire stays
// application/grpc+proto, which every plugin and host understands.
func (contentCodec) Name() string { return grpcproto.Name }

// Marshal sends an outgoingChunk as a tag and a length in front of the
// chunk's own buffer, which gRPC frees once it has written it.
func (c contentCodec) Marshal(v any) (mem.BufferSlice, error) {
	out, ok := v.(*outgoingChunk)
	if !ok || out.data == nil {
		return c.proto.Marshal(v)
	}
	head := protowire.AppendTag(make([]byte, 0, 16), chunkField, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(out.data.Len()))
	out.data.Ref()
	return mem.BufferSlice{mem.SliceBuffer(head), out.data}, nil
}

// Unmarshal leaves a chunk in gRPC's receive buffers, for the reader to
// copy from once, when the message is exactly one chunk field. Anything
// else (a header, or a chunk encoded some other legal way) is decoded by
// gRPC's codec into the embedded ScanRequest.
func (c contentCodec) Unmarshal(data mem.BufferSlice, v any) error {
	in, ok := v.(*incomingRequest)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	in.chunk = nil
	r := data.Reader()
	if n, ok := chunkLength(r); ok && n == uint64(r.Remaining()) && n > 0 {
		in.ScanRequest.Reset()
		in.chunk = r
		return nil
	}
	r.Close()
	return c.proto.Unmarshal(data, in.ScanRequest)
}

const chunkField protowire.Number = 2 // ScanRequest.chunk

// chunkLength reads the tag and length that start a message made of one
// chunk field, and reports whether they are that.
func chunkLength(r *mem.Reader) (uint64, bool) {
	tag, ok := readVarint(r)
	if !ok || tag != protowire.EncodeTag(chunkField, protowire.BytesType) {
		return 0, false
	}
	return readVarint(r)
}

func readVarint(r *mem.Reader) (uint64, bool) {
	var x uint64
	for shift := 0; shift < 64; shift += 7 {
		b, err := r.ReadByte()
		if err != nil {
			return 0, false
		}
		x |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return x, true
		}
	}
	return 0, false
}

// outgoingChunk is a chunk to send whose bytes are in a pooled buffer.
// Send it with SendMsg and then Free data: contentCodec takes its own
// reference, which gRPC drops after writing, so the buffer goes back to
// its pool only when nothing reads it any more.
type outgoingChunk struct {
	*proto.ScanRequest
	data mem.Buffer
}

func newOutgoingChunk(data mem.Buffer) *outgoingChunk {
	return &outgoingChunk{
		// For gRPC's own codec, should it be the one in use.
		ScanRequest: &proto.ScanRequest{Msg: &proto.ScanRequest_Chunk{Chunk: data.ReadOnlyData()}},
		data:        data,
	}
}

// incomingRequest is a received ScanRequest: a chunk still in gRPC's
// buffers (chunk), or anything decoded the ordinary way (ScanRequest).
type incomingRequest struct {
	*proto.ScanRequest
	// chunk holds references to gRPC's buffers until it is read to its
	// end or closed.
	chunk *mem.Reader
}

func newIncomingRequest() *incomingRequest {
	return &incomingRequest{ScanRequest: &proto.ScanRequest{}}
}

// chunkPool recycles the host's chunk buffers without zeroing them: each is
// filled by a read before anything sends it. gRPC's default pool zeroes
// every buffer it hands out, a full pass over each chunk.
type chunkPool struct {
	size int
	pool sync.Pool
}

var _ mem.BufferPool = (*chunkPool)(nil)

func newChunkPool(size int) *chunkPool {
	p := &chunkPool{size: size}
	p.pool.New = func() any { b := make([]byte, size); return &b }
	return p
}

// Get returns a buffer of length n; n must not exceed the pool's size.
func (p *chunkPool) Get(n int) *[]byte {
	if n > p.size {
		panic(fmt.Sprintf("chunkPool.Get(%d) beyond its size %d", n, p.size))
	}
	b := p.pool.Get().(*[]byte)
	*b = (*b)[:n]
	return b
}

func (p *chunkPool) Put(b *[]byte) {
	if cap(*b) < p.size {
		return
	}
	*b = (*b)[:p.size]
	p.pool.Put(b)
}
