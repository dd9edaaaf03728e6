// Command ignoresize reads every stream to its end, drops the error that
// says the stream did not hold its announced size, and answers on what it
// read. The shim's guard in shared.Serve must still turn its benign into
// unknown, so the SIZE checks pass.
package main

import "github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"

func main() {
	fakeplugin.Main(fakeplugin.Options{Name: "ignoresize", IgnoreStreamLength: true})
}
