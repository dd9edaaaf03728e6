// Command nocancel has one scan engine and ignores cancellation: a
// cancelled scan keeps the engine busy for 20 s.
package main

import "github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"

func main() {
	fakeplugin.Main(fakeplugin.Options{Name: "nocancel", IgnoreCancel: true})
}
