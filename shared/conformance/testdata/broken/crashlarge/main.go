// Command crashlarge exits in the middle of any scan larger than 8 MiB.
package main

import "github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"

func main() {
	fakeplugin.Main(fakeplugin.Options{Name: "crashlarge", CrashAbove: 8 << 20})
}
