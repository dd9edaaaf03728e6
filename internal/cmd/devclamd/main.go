// Command devclamd runs a private clamd in the foreground on the repo's test
// signatures, for `make run` and local development. It prints the daemon's
// address (unix:///...) on stdout, optionally writes it to a file, and stops
// clamd on SIGINT or SIGTERM. It exits non-zero if clamd dies.
//
//	go run ./internal/cmd/devclamd -address-file .run/clamd.addr
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/shared"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devclamd:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		opts        devclamd.Options
		maxLen      = flag.String("stream-max-length", "25M", "clamd StreamMaxLength (25M is Debian's)")
		addressFile = flag.String("address-file", "", "also write the address to this file (removed on exit)")
		tcpFile     = flag.String("tcp-address-file", "", "with -tcp, write the TCP address to this file (removed on exit)")
	)
	flag.StringVar(&opts.Dir, "dir", "", "work folder for config, socket and log (default: a temporary folder, removed on exit)")
	flag.StringVar(&opts.SignatureDir, "signatures", "", "signature database folder (default: the repo's testdata/signatures)")
	flag.BoolVar(&opts.TCP, "tcp", false, "also listen on 127.0.0.1 at a free TCP port")
	flag.IntVar(&opts.MaxThreads, "max-threads", 0, "clamd MaxThreads (default: clamd's)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	n, err := shared.ParseSize(*maxLen)
	if err != nil {
		return fmt.Errorf("-stream-max-length: %w", err)
	}
	opts.StreamMaxLength = n
	// clamd's own lines go to our stderr: stdout carries the address only.
	opts.Log = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := devclamd.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer d.Stop()

	fmt.Println(d.Address())
	if d.TCPAddress() != "" {
		fmt.Println(d.TCPAddress())
	}
	for file, addr := range map[string]string{*addressFile: d.Address(), *tcpFile: d.TCPAddress()} {
		if file == "" || addr == "" {
			continue
		}
		if err := writeAtomically(file, addr+"\n"); err != nil {
			return err
		}
		defer os.Remove(file)
	}
	if filepath.Dir(d.SocketPath()) != d.Dir() {
		fmt.Fprintf(os.Stderr, "devclamd: %s is too long a path for a unix socket; the socket is %s instead\n",
			filepath.Join(d.Dir(), "clamd.sock"), d.SocketPath())
	}
	fmt.Fprintf(os.Stderr, "devclamd: clamd pid %d ready at %s (config %s); Ctrl-C stops it\n", d.Pid(), d.Address(), d.ConfigPath())

	select {
	case <-ctx.Done():
		return d.Stop()
	case <-d.Done():
		return fmt.Errorf("clamd exited: %v", d.ExitErr())
	}
}

// writeAtomically writes via a rename, so a script polling for the file
// never reads half an address.
func writeAtomically(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".devclamd-*")
	if err != nil {
		return fmt.Errorf("write address file: %w", err)
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("write address file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write address file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write address file: %w", err)
	}
	return nil
}
