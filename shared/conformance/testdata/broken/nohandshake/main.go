// Command nohandshake never completes the go-plugin handshake: it never
// calls Serve and sleeps instead.
package main

import (
	"os"
	"time"
)

func main() {
	os.Stderr.WriteString("nohandshake: sleeping instead of serving\n")
	// Bounded, so a plugin orphaned by a killed test does not linger.
	time.Sleep(2 * time.Minute)
}
