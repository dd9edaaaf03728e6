package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/microengine/microengine/host/config"
)

// configFlags are the flags every config-reading command shares.
type configFlags struct {
	path     string
	logLevel string
}

func (c *configFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.path, "config", "engine.hcl", "path to engine.hcl")
	fs.StringVar(&c.logLevel, "log-level", "", "trace, debug, info, warn or error (default: engine.log_level)")
}

// load reads engine.hcl and prints its diagnostics, FILE:LINE:COL first.
func (c *configFlags) load(stderr io.Writer) (*config.Config, bool) {
	cfg, diags := config.Load(c.path)
	if len(diags) > 0 {
		var files map[string]*hcl.File
		if cfg != nil {
			files = cfg.Files
		}
		_ = config.WriteDiagnostics(stderr, files, diags)
	}
	return cfg, !diags.HasErrors()
}

// logger logs to stderr only: stdout carries results. One-shot commands
// (scan, validate, plugins) default to warnings only, so their output reads
// like clamdscan's; `run` uses engine.log_level.
func (c *configFlags) logger(cfg *config.Config, stderr io.Writer) hclog.Logger {
	return c.loggerAt(cfg, stderr, "warn")
}

func (c *configFlags) loggerAt(cfg *config.Config, stderr io.Writer, fallback string) hclog.Logger {
	level := c.logLevel
	if level == "" && fallback == "" && cfg != nil {
		level = cfg.Engine.LogLevel
	}
	if level == "" {
		level = fallback
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:   "microengine",
		Output: stderr,
		Level:  hclog.LevelFromString(level),
	})
}

func newFlagSet(name string, stderr io.Writer, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: microengine %s\n\nOptions:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}
