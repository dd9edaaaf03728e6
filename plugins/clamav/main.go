// Command microengine-plugin-clamav is the clamav scanner plugin: it streams
// artifacts to a running clamd. The host launches it; run by hand it
// explains that and exits.
package main

import (
	"github.com/microengine/microengine/plugins/clamav/scanner"
	"github.com/microengine/microengine/shared"
)

func main() {
	log := shared.Logger(scanner.Name)
	shared.Serve(scanner.New(log), log)
}
