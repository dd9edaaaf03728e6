// Command allbenign answers benign for everything, including the EICAR
// sample it declares as malicious.
package main

import "github.com/microengine/microengine/shared/conformance/testdata/fakeplugin"

func main() {
	fakeplugin.Main(fakeplugin.Options{Name: "allbenign", AllBenign: true})
}
