package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/microengine/microengine/host/scaffold"
)

// runNewPlugin writes plugins/NAME (a scanner that builds and passes the
// conformance suite as it is) and prints the engine.hcl block to paste.
func runNewPlugin(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("new-plugin", stderr, "new-plugin [-dir plugins] NAME")
	dir := fs.String("dir", "plugins", "the folder to create the plugin's folder in (the default, plugins, only from the repository's root)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	name := fs.Arg(0)
	dirSet := false
	fs.Visit(func(f *flag.Flag) { dirSet = dirSet || f.Name == "dir" })
	if !dirSet {
		cwd, err := os.Getwd()
		if err == nil {
			*dir, err = scaffold.DefaultDir(cwd)
		}
		if err != nil {
			fmt.Fprintf(stderr, "microengine new-plugin: %v\n", err)
			return 1
		}
	}
	written, err := scaffold.Write(*dir, name)
	if err != nil {
		fmt.Fprintf(stderr, "microengine new-plugin: %v\n", err)
		return 1
	}
	block, err := scaffold.ConfigBlock(name)
	if err != nil {
		fmt.Fprintf(stderr, "microengine new-plugin: %v\n", err)
		return 1
	}
	for _, p := range written {
		fmt.Fprintf(stdout, "wrote %s\n", p)
	}
	pkg := filepath.Join(*dir, name)
	if !filepath.IsAbs(pkg) {
		pkg = "./" + pkg
	}
	fmt.Fprintf(stdout, `
Next:
  go test %[2]s     # builds it and runs the conformance suite on it
  make build        # builds bin/microengine-plugin-%[1]s with the other plugins
  bin/microengine conformance bin/microengine-plugin-%[1]s

Paste into engine.hcl:

%[3]s`, name, pkg, block)
	return 0
}
