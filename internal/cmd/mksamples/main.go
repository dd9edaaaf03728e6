// Command mksamples writes the sample set (see internal/samples) into a
// folder: mksamples DIR.
package main

import (
	"fmt"
	"os"

	"github.com/microengine/microengine/internal/samples"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mksamples DIR")
		os.Exit(2)
	}
	if err := samples.Write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "mksamples:", err)
		os.Exit(1)
	}
}
