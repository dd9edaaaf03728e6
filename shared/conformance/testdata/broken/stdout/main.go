// Command stdout writes a line to stdout before the handshake, which breaks
// go-plugin's handshake: the host reads it as the handshake line.
package main

import (
	"fmt"

	"github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"
)

func main() {
	fmt.Println("starting the stdout plugin")
	fakeplugin.Main(fakeplugin.Options{Name: "stdout"})
}
