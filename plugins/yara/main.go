// Command microengine-plugin-yara is the yara scanner plugin: it scans
// artifacts with libyara against the rule files its config block names.
// The host launches it; run by hand it explains that and exits.
package main

import (
	"github.com/microengine/microengine/plugins/yara/scanner"
	"github.com/microengine/microengine/shared"
)

func main() {
	log := shared.Logger(scanner.Name)
	shared.Serve(scanner.New(log), log)
}
