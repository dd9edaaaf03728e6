package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/conformance"
	pluginlaunch "github.com/microengine/microengine/shared/launch"
)

// pluginBinary is the plugin built by TestMain, launched by the tests as
// the host launches it.
var pluginBinary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	bin, cleanup, err := conformance.BuildPlugin(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	pluginBinary = bin
	// The plugins the tests launch keep their clamd probe findings here,
	// not in the user's cache folder.
	cache, err := os.MkdirTemp("", "clamav-plugin-cache")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(cache)
	os.Setenv("XDG_CACHE_HOME", cache)
	defer plugin.CleanupClients()
	return m.Run()
}

// launched is a running plugin process and its scanner.
type launched struct {
	client  *pluginlaunch.Client
	scanner *shared.GRPCClient
}

// pid is the plugin's process id.
func (l *launched) pid() int { return l.client.ReattachConfig().Pid }

// launch starts the plugin binary through pluginlaunch.NewClient, as the host
// does, and kills it when the test ends.
func launch(tb testing.TB) *launched {
	tb.Helper()
	c, err := pluginlaunch.NewClient(pluginlaunch.Config{
		Path:   pluginBinary,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "host", Level: hclog.Warn, Output: os.Stderr}),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		done := make(chan struct{})
		go func() { c.Kill(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			tb.Error("the plugin did not stop within 5s of Kill")
		}
	})
	s, err := pluginlaunch.Dispense(c)
	if err != nil {
		tb.Fatal(err)
	}
	return &launched{client: c, scanner: s}
}

func configure(tb testing.TB, s shared.Scanner, configJSON string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Configure(ctx, []byte(configJSON)); err != nil {
		tb.Fatalf("Configure(%s): %v", configJSON, err)
	}
}
