// Command slowconfig is a test plugin whose Configure takes as long as its
// config block says (configure_for), as a plugin that compiles a large rule
// set or waits for its backend does. It recognises EICAR like the eicar
// plugin. The host's tests use it to check that a slow Configure, within
// its own budget, does not eat the budget of the calls after it.
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/microengine/microengine/internal/testplugins/eicarscan"
	"github.com/microengine/microengine/shared"
)

type config struct {
	ConfigureFor time.Duration `json:"configure_for"`
}

func (c *config) CheckConfig(ce *shared.ConfigError) {
	if c.ConfigureFor < 0 {
		ce.Add("configure_for", "must not be negative")
	}
}

type scanner struct{}

func (s *scanner) Info(context.Context) (shared.Info, error) {
	return shared.Info{
		Name: "slowconfig", Version: "0.1.0", Vendor: "microengine-tests", VendorVersion: "0.1.0",
		ArtifactTypes: []shared.ArtifactType{shared.ArtifactFile},
		ConfigSchema: []shared.ConfigField{{Name: "configure_for", Type: shared.FieldDuration, Default: "0s",
			Description: "how long Configure takes"}},
	}, nil
}

func (s *scanner) Configure(ctx context.Context, raw []byte) error {
	var cfg config
	if err := shared.DecodeConfig(raw, &cfg); err != nil {
		return err
	}
	// A logger made here, after Serve, as a plugin author would: its line
	// must reach the host as a log entry, not as raw JSON.
	shared.Logger("slowconfig").Info("configuring", "configure_for", cfg.ConfigureFor)
	t := time.NewTimer(cfg.ConfigureFor)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("configure: %w", ctx.Err())
	}
}

func (s *scanner) Health(context.Context) (shared.Health, error) {
	return shared.Health{Healthy: true, Message: "ok"}, nil
}

func (s *scanner) Scan(ctx context.Context, a shared.Artifact) (shared.Result, error) {
	return eicarscan.Scan(ctx, a, nil)
}

func main() {
	log := shared.Logger("slowconfig")
	shared.Serve(&scanner{}, log)
}
