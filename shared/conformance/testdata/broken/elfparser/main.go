// Command elfparser panics on an ELF header cut short: a plugin that passes
// every check with well-formed content and only hostile content crashes.
package main

import "github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"

func main() {
	fakeplugin.Main(fakeplugin.Options{Name: "elfparser", ParseELF: true})
}
