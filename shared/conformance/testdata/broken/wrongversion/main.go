// Command wrongversion serves only protocol version 2 of the contract, as a
// plugin built against a future contract would.
package main

import (
	"github.com/hashicorp/go-plugin"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"
)

func main() {
	log := shared.Logger("wrongversion")
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: shared.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			2: {shared.PluginName: &shared.ScannerPlugin{Impl: fakeplugin.New(fakeplugin.Options{Name: "wrongversion"}, log)}},
		},
		Logger:     log,
		GRPCServer: plugin.DefaultGRPCServer,
	})
}
