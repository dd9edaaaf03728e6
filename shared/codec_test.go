package shared

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	protobuf "google.golang.org/protobuf/proto"

	"github.com/microengine/microengine/shared/proto"
)

// hashingScanner records the sha256 of each artifact's content, by ID.
type hashingScanner struct {
	testScanner
	mu   sync.Mutex
	seen map[string][32]byte
}

func newHashingScanner() *hashingScanner {
	s := &hashingScanner{seen: map[string][32]byte{}}
	s.scan = func(_ context.Context, a Artifact) (Result, error) {
		h := sha256.New()
		n, err := io.Copy(h, a.Content)
		if err != nil {
			return Unknown("read: %v", err), nil
		}
		s.mu.Lock()
		s.seen[a.ID] = [32]byte(h.Sum(nil))
		s.mu.Unlock()
		return Result{Verdict: VerdictBenign, Confidence: 1, BytesScanned: n}, nil
	}
	return s
}

// connectWithCodecs connects a host client to a plugin server over a unix
// socket, each side with the content codec or with gRPC's own.
func connectWithCodecs(t *testing.T, impl Scanner, hostCodec, pluginCodec bool) *GRPCClient {
	t.Helper()
	serverOpts := []grpc.ServerOption{grpc.MaxRecvMsgSize(maxMessageSize)}
	if pluginCodec {
		serverOpts = append(serverOpts, grpc.ForceServerCodecV2(newContentCodec()))
	}
	server := grpc.NewServer(serverOpts...)
	proto.RegisterScannerServer(server, &grpcServer{impl: impl})
	// A short folder, not t.TempDir(): with this test's long names that
	// one made a 92-byte socket path under /tmp, and a unix socket's
	// path must fit in 108 bytes (a longer TMPDIR would not).
	dir, err := os.MkdirTemp("", "codec-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "plugin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go server.Serve(l)
	t.Cleanup(server.Stop)
	callOpts := []grpc.CallOption{grpc.MaxCallSendMsgSize(maxMessageSize)}
	if hostCodec {
		callOpts = append(callOpts, grpc.ForceCodecV2(newContentCodec()))
	}
	conn, err := grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(callOpts...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := proto.NewScannerClient(conn)
	return newGRPCClient(client, DefaultChunkSize, newSessionPool(client), nil)
}

// Content crosses intact whichever side uses the content codec, whatever
// the chunking: the codecs share one wire format, and no chunk buffer is
// reused while gRPC still has it to write.
func TestContentCodecCarriesEveryChunkIntact(t *testing.T) {
	sizes := []int{0, 1, 1000, 4096, DefaultChunkSize - 1, DefaultChunkSize, DefaultChunkSize + 1, 3<<20 + 7}
	chunkings := []int{3, 1500, DefaultChunkSize, MaxChunkSize}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, codecs := range []struct{ host, plugin bool }{{true, true}, {true, false}, {false, true}, {false, false}} {
		t.Run(fmt.Sprintf("host_%v_plugin_%v", codecs.host, codecs.plugin), func(t *testing.T) {
			impl := newHashingScanner()
			base := connectWithCodecs(t, impl, codecs.host, codecs.plugin)
			for _, chunk := range chunkings {
				c := base.WithChunkSize(chunk)
				for _, size := range sizes {
					if chunk == 3 && size > 4096 {
						continue // a million messages prove nothing more
					}
					content := make([]byte, size)
					for i := range content {
						content[i] = byte(rng.Uint32())
					}
					id := fmt.Sprintf("c%d-s%d", chunk, size)
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					res, err := c.Scan(ctx, Artifact{ID: id, Type: ArtifactFile, Size: int64(size), Content: bytes.NewReader(content)})
					cancel()
					if err != nil || res.Verdict != VerdictBenign {
						t.Fatalf("%s: %+v, %v", id, res, err)
					}
					impl.mu.Lock()
					got := impl.seen[id]
					impl.mu.Unlock()
					if got != sha256.Sum256(content) {
						t.Fatalf("%s: the plugin received other bytes than were sent", id)
					}
				}
			}
		})
	}
}

// The codec's fast path covers exactly a message made of one chunk field;
// anything else must decode as gRPC's proto codec would.
func TestContentCodecUnmarshal(t *testing.T) {
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 5000)
	field := func(b []byte, num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	header, err := protobuf.Marshal(&proto.ScanRequest{Msg: &proto.ScanRequest_Header{Header: &proto.ScanHeader{ArtifactId: "a", Size: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		wire   []byte
		fast   bool
		header string
		want   []byte
	}{
		{"one chunk field", field(nil, 2, chunk), true, "", chunk},
		{"header", header, false, "a", nil},
		// A repeated scalar field: the last one wins.
		{"chunk field twice", field(field(nil, 2, []byte("old")), 2, chunk), false, "", chunk},
		{"chunk then unknown field", field(field(nil, 2, chunk), 9, []byte("x")), false, "", chunk},
		{"empty chunk", field(nil, 2, nil), false, "", nil},
	}
	codec := newContentCodec()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Split across buffers as gRPC's frames would be.
			var data mem.BufferSlice
			for rest := tc.wire; len(rest) > 0; {
				n := min(len(rest), 7000)
				data = append(data, mem.SliceBuffer(rest[:n]))
				rest = rest[n:]
			}
			in := newIncomingRequest()
			if err := codec.Unmarshal(data, in); err != nil {
				t.Fatal(err)
			}
			if (in.chunk != nil) != tc.fast {
				t.Fatalf("fast path taken: %v, want %v", in.chunk != nil, tc.fast)
			}
			got := in.GetChunk()
			if in.chunk != nil {
				got, _ = io.ReadAll(in.chunk)
			}
			if in.GetHeader().GetArtifactId() != tc.header || !bytes.Equal(got, tc.want) {
				t.Fatalf("decoded header %q and %d chunk bytes, want %q and %d", in.GetHeader().GetArtifactId(), len(got), tc.header, len(tc.want))
			}
		})
	}
}

// An outgoing chunk is marshalled as gRPC's codec would marshal the same
// message, without copying the chunk, and its buffer goes back to the pool
// only when gRPC frees it.
func TestContentCodecMarshal(t *testing.T) {
	pool := &countingPool{chunkPool: newChunkPool(64 << 10)}
	buf := pool.Get(40 << 10)
	for i := range *buf {
		(*buf)[i] = byte(i)
	}
	data := mem.NewBuffer(buf, pool)
	msg := newOutgoingChunk(data)
	out, err := newContentCodec().Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	want, err := protobuf.Marshal(msg.ScanRequest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Materialize(), want) {
		t.Fatal("the content codec's bytes differ from protobuf's")
	}
	if &out[1].ReadOnlyData()[0] != &(*buf)[0] {
		t.Fatal("the chunk was copied")
	}
	data.Free() // the sender's reference
	if pool.puts != 0 {
		t.Fatal("the buffer went back to the pool while gRPC still held it")
	}
	out.Free() // gRPC's, once written
	if pool.puts != 1 {
		t.Fatalf("the buffer went back to the pool %d times, want once", pool.puts)
	}
}

type countingPool struct {
	*chunkPool
	puts int
}

func (p *countingPool) Put(b *[]byte) {
	p.puts++
	p.chunkPool.Put(b)
}

// A scan that starts with a chunk instead of its header is refused, also
// when the chunk arrives through the codec's fast path.
func TestScanMustStartWithItsHeader(t *testing.T) {
	for _, pluginCodec := range []bool{true, false} {
		c := connectWithCodecs(t, newHashingScanner(), true, pluginCodec)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		stream, err := c.client.Scan(ctx)
		if err != nil {
			t.Fatal(err)
		}
		data := mem.SliceBuffer(bytes.Repeat([]byte("x"), 64<<10))
		if err := stream.SendMsg(newOutgoingChunk(data)); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		_, err = stream.CloseAndRecv()
		cancel()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "must be its header") {
			t.Errorf("plugin codec %v: a scan that starts with a chunk got %v, want InvalidArgument", pluginCodec, err)
		}
	}
}
