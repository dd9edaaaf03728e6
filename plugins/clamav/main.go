// Command microengine-plugin-clamav is the clamav scanner plugin: it streams
// artifacts to a running clamd. The host launches it; run by hand it
// explains that and exits.
package main

import (
	"os"
	"runtime"

	"github.com/microengine/microengine/plugins/clamav/scanner"
	"github.com/microengine/microengine/shared"
)

func main() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(relayProcs(runtime.GOMAXPROCS(0)))
	}
	log := shared.Logger(scanner.Name)
	s := scanner.New(log)
	shared.Serve(s, log)
	// The host asked the plugin to exit: stop the managed clamd, if any,
	// and remove its folder (a killed plugin's clamd dies with it; its
	// folder goes at the next start).
	s.Close()
}

// relayProcs is how many threads the plugin runs Go code on, out of n. The
// plugin only relays bytes between the host and clamd, which usually
// shares the machine and does the scanning. A relay on every core gains
// nothing while clamd is busy: its idle threads spin looking for work and
// wake each other across cores, CPU that clamd then lacks. On 2 cores one
// thread made small-file throughput ~10% higher. The plugin spends about
// 40% of clamd's CPU per small artifact, so a quarter of the cores keeps it
// from becoming the bottleneck on larger machines. GOMAXPROCS in the
// environment overrides this.
func relayProcs(n int) int {
	return max(1, n/4)
}
