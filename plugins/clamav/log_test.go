package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	pluginlaunch "github.com/microengine/microengine/shared/launch"
)

// The host re-emits the plugin's log lines with sizes and durations as
// people write them, not as the floats go-plugin reads JSON numbers into
// (timeout=3e+10, max_stream_size=2.62144e+07).
func TestHostLogShowsSizesAndDurationsAsWritten(t *testing.T) {
	var out bytes.Buffer
	c, err := pluginlaunch.NewClient(pluginlaunch.Config{
		Path:   pluginBinary,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "host", Level: hclog.Info, Output: &out}),
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := pluginlaunch.Dispense(c)
	if err != nil {
		c.Kill()
		t.Fatal(err)
	}
	// No clamd is needed: Configure does not dial.
	configure(t, s, `{"address":"unix:///nonexistent/clamd.sock","timeout":"1m30s","max_stream_size":"25M","max_connections":3}`)
	// Kill returns once the plugin's stderr has been read to its end, so
	// every line it logged is in out.
	c.Kill()

	var line string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "configured") {
			line = l
		}
	}
	for _, want := range []string{"timeout=1m30s", "max_stream_size=25MiB", "max_connections=3"} {
		if !strings.Contains(line, want) {
			t.Errorf("the host's line for Configure lacks %q:\n%s\nwhole log:\n%s", want, line, out.String())
		}
	}
}
