package conformance

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestBuildPlugin(t *testing.T) {
	bin, cleanup, err := BuildPlugin("../../plugins/eicar", "-X main.version=7.7.7")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(bin) != "microengine-plugin-eicar" {
		t.Errorf("built %s, want microengine-plugin-eicar", bin)
	}
	r := mustCheck(t, Config{Plugin: bin}, regexp.MustCompile("^INFO-001$"))
	if r.Plugin.Version != "7.7.7" {
		t.Errorf("version %q: the ldflags were not applied", r.Plugin.Version)
	}
	cleanup()
	if _, err := os.Stat(filepath.Dir(bin)); !os.IsNotExist(err) {
		t.Errorf("cleanup left %s: %v", filepath.Dir(bin), err)
	}
	if _, _, err := BuildPlugin("./no/such/plugin"); err == nil || !strings.Contains(err.Error(), "no/such/plugin") {
		t.Errorf("a missing package: %v; want an error naming it", err)
	}
}
