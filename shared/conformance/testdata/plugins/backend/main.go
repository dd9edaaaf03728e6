// Command backend is a healthy plugin with a (fake) backend: the file named
// by its "backend" setting. The suite's tests stop the backend by removing
// the file.
package main

import "github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"

func main() {
	fakeplugin.Main(fakeplugin.Options{Name: "backend", HasBackend: true})
}
