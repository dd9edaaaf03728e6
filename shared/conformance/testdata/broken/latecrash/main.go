// Command latecrash leaves work behind on a zip header (a goroutine, as a
// parser with a background decompressor might) that panics once the next
// scan has started: the process dies during a later, innocent input.
package main

import "github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"

func main() {
	fakeplugin.Main(fakeplugin.Options{Name: "latecrash", CrashAfterZip: true})
}
