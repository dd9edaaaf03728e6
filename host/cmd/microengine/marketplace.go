package main

import (
	"context"
	"fmt"
	"io"
)

// Owned by the marketplace work (stubs until it lands).

func runEngine(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "run: not built yet")
	return 2
}

func runBounties(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "bounties: not built yet")
	return 2
}

func runSimulate(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "simulate: not built yet")
	return 2
}
