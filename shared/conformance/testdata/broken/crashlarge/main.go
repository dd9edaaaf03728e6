// Command crashlarge exits in the middle of any scan larger than 8 MiB. It
// takes artifacts by reference, so a crash with a descriptor in hand is
// tested too.
package main

import "github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"

func main() {
	fakeplugin.Main(fakeplugin.Options{Name: "crashlarge", CrashAbove: 8 << 20, ByReference: true})
}
