// Command microengine-plugin-eicar is the eicar scanner plugin: it
// recognises the EICAR anti-virus test file and needs no backend.
package main

import "github.com/microengine/microengine/shared"

// version is set at build time with -ldflags "-X main.version=…".
var version = "1.0.0"

func main() {
	log := shared.Logger("eicar")
	shared.Serve(NewScanner(version, log), log)
}
