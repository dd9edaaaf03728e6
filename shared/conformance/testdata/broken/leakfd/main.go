// Command leakfd takes artifacts by reference and keeps a duplicate of
// every descriptor it is passed.
package main

import "github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"

func main() {
	fakeplugin.Main(fakeplugin.Options{Name: "leakfd", ByReference: true, LeakDescriptors: true})
}
