package shared

import (
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// Serve runs a scanner as a plugin. It does not return. It also makes sure
// the plugin cannot outlive its host: see watchParent.
func Serve(s Scanner, logger hclog.Logger) {
	if logger == nil {
		logger = Logger("plugin")
	}
	watchParent(logger, time.Second)
	byRef := false
	if launchedByHost() {
		var err error
		if byRef, err = listenDescriptors(s, logger); err != nil {
			logger.Warn("artifacts will be streamed", "error", err)
		}
	}
	sets := PluginSets(s)
	sets[ProtocolVersion][PluginName].(*ScannerPlugin).descriptors = byRef
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: sets,
		Logger:           logger,
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			// Explicit limits: chunks up to MaxChunkSize, and fixed flow-control
			// windows so a stream's buffers stay near WindowSize.
			return grpc.NewServer(append(opts,
				grpc.MaxRecvMsgSize(maxMessageSize),
				grpc.InitialWindowSize(WindowSize),
				grpc.InitialConnWindowSize(WindowSize),
				grpc.ForceServerCodecV2(newContentCodec()),
			)...)
		},
	})
}

// launchedByHost reports whether the magic cookie is present, i.e. whether
// we were started by a host rather than by hand.
func launchedByHost() bool {
	return strings.TrimSpace(os.Getenv(Handshake.MagicCookieKey)) == Handshake.MagicCookieValue
}
