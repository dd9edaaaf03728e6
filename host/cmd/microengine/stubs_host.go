package main

import (
	"context"
	"fmt"
	"io"
)

func runScan(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "scan: not built yet")
	return 2
}
func runValidate(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "validate: not built yet")
	return 2
}
func runPlugins(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "plugins: not built yet")
	return 2
}
func runReload(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "reload: not built yet")
	return 2
}
