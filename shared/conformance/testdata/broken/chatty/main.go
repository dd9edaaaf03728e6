// Command chatty writes to stdout on every scan, after the handshake.
package main

import "github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"

func main() {
	fakeplugin.Main(fakeplugin.Options{Name: "chatty", PrintOnScan: true})
}
