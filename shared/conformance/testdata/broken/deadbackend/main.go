// Command deadbackend declares a backend but keeps answering healthy and
// benign after the backend is gone.
package main

import "github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"

func main() {
	fakeplugin.Main(fakeplugin.Options{Name: "deadbackend", HasBackend: true, IgnoreBackendDown: true})
}
