package main

import (
	"context"
	"fmt"
	"io"

	"github.com/microengine/microengine/shared"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0"

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) int {
	fmt.Fprintf(stdout, "microengine %s (plugin protocol v%d)\n", version, shared.ProtocolVersion)
	return 0
}
