// Command opensocket listens where go-plugin before v1.5 did, in the
// system's temp directory, instead of the private directory the host
// names: without TLS, other users might reach that socket.
package main

import (
	"os"

	"github.com/hashicorp/go-plugin"

	"github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"
)

func main() {
	os.Unsetenv(plugin.EnvUnixSocketDir)
	fakeplugin.Main(fakeplugin.Options{Name: "opensocket"})
}
