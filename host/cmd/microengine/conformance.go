package main

import (
	"context"
	"fmt"
	"io"
)

// runConformance is owned by the conformance work (stub until it lands).
func runConformance(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "conformance: not built yet")
	return 2
}
