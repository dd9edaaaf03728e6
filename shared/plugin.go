package shared

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/microengine/microengine/shared/proto"
)

// ProtocolVersion is the version of the plugin contract this package speaks.
// A future v2 is served beside v1 through VersionedPlugins.
const ProtocolVersion = 1

// PluginName is the key under which a scanner is dispensed.
const PluginName = "scanner"

// Handshake keeps a plugin binary from being run by hand by mistake and
// keeps the host from launching something that is not a microengine plugin.
var Handshake = plugin.HandshakeConfig{
	// ProtocolVersion is left 0: VersionedPlugins carries the versions.
	MagicCookieKey:   "MICROENGINE_PLUGIN",
	MagicCookieValue: "4f1d2c5e-scanner-plugin",
}

// Transfer limits. The host sends chunks of DefaultChunkSize; a plugin
// accepts any chunk from 1 byte to MaxChunkSize. Windows are fixed so a
// stream holds at most about WindowSize in flight instead of growing to
// 16 MiB.
const (
	DefaultChunkSize = 256 << 10
	MaxChunkSize     = 1 << 20
	WindowSize       = 1 << 20
	maxMessageSize   = MaxChunkSize + 64<<10
)

// PluginSets returns the plugin sets by protocol version. impl is nil on the
// host side.
func PluginSets(impl Scanner) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		ProtocolVersion: {PluginName: &ScannerPlugin{Impl: impl}},
	}
}

// ScannerPlugin is the go-plugin glue for Scanner, gRPC only.
type ScannerPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Scanner
	// descriptors: the plugin listens for artifacts by reference (set by
	// Serve).
	descriptors bool
}

func (p *ScannerPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	proto.RegisterScannerServer(s, &grpcServer{impl: p.Impl, descriptors: p.descriptors})
	return nil
}

func (p *ScannerPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	client := proto.NewScannerClient(c)
	return newGRPCClient(client, DefaultChunkSize, newSessionPool(client), &descriptorPool{}), nil
}

// DialOptions are the gRPC options the host's side of a plugin connection
// needs: flow-control windows bounded to WindowSize, message limits, and
// the codec that copies content chunks once. shared/launch dials with them.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(WindowSize),
		grpc.WithInitialConnWindowSize(WindowSize),
		// Info may carry samples, so its reply may exceed gRPC's 4 MiB
		// default; scans only ever receive a small response.
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(maxMessageSize), grpc.MaxCallRecvMsgSize(16<<20),
			grpc.ForceCodecV2(newContentCodec())),
	}
}
