// Command crasher is a test plugin with a bug on purpose: it recognises
// EICAR like the eicar plugin, and panics (a write to a nil map, the kind
// of bug a parser has) on any artifact that contains the marker
// "CRASH-ME". The host's tests use it to check that one poison artifact
// costs its own verdict and no other. With panic_in = "configure" in its
// config block it panics in Configure instead, as a plugin whose config
// parsing has the bug would.
package main

import (
	"bytes"
	"context"
	"log"
	"os"

	"github.com/microengine/microengine/internal/testplugins/eicarscan"
	"github.com/microengine/microengine/shared"
)

// Marker makes the plugin panic.
const Marker = "CRASH-ME"

// ExitMarker makes the plugin log a line and exit, without a panic.
const ExitMarker = "EXIT-ME"

type scanner struct {
	seen map[string]int // never made: writing to it is the bug
}

func (s *scanner) Info(context.Context) (shared.Info, error) {
	return shared.Info{
		Name: "crasher", Version: "0.1.0", Vendor: "microengine-tests", VendorVersion: "0.1.0",
		ArtifactTypes: []shared.ArtifactType{shared.ArtifactFile},
		ConfigSchema: []shared.ConfigField{
			{Name: "panic_in", Type: shared.FieldString, Default: "", Description: `"configure": panic in Configure`},
		},
	}, nil
}

type settings struct {
	PanicIn string `json:"panic_in"`
}

func (s *scanner) Configure(_ context.Context, raw []byte) error {
	var c settings
	if err := shared.DecodeConfig(raw, &c); err != nil {
		return err
	}
	if c.PanicIn == "configure" {
		s.seen["configure"]++
	}
	return nil
}

func (s *scanner) Health(context.Context) (shared.Health, error) {
	return shared.Health{Healthy: true, Message: "ok"}, nil
}

func (s *scanner) Scan(ctx context.Context, a shared.Artifact) (shared.Result, error) {
	return eicarscan.Scan(ctx, a, func(content []byte) {
		if bytes.Contains(content, []byte(Marker)) {
			s.seen[a.ID]++
		}
		if bytes.Contains(content, []byte(ExitMarker)) {
			log.Printf("giving up on %s", ExitMarker) // log.Fatal's way: a line, then exit
			os.Exit(3)
		}
	})
}

func main() {
	log := shared.Logger("crasher")
	shared.Serve(&scanner{}, log)
}
