package pluginmgr_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	pluginlaunch "github.com/microengine/microengine/shared/launch"
)

// A plugin that makes its logger with shared.Logger after Serve (in
// Configure, say) is heard like one that made it before: the host
// re-emits an entry with its fields, not the raw JSON line (Serve points
// os.Stderr elsewhere, but the logger writes to the process's stderr).
func TestLoggerMadeAfterServeReachesTheHostParsed(t *testing.T) {
	var out bytes.Buffer
	c, err := pluginlaunch.NewClient(pluginlaunch.Config{
		Path:   bins(t).slowconfig,
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
	if err := s.Configure(context.Background(), []byte(`{"configure_for":"0s"}`)); err != nil {
		c.Kill()
		t.Fatal(err)
	}
	// Kill returns once the plugin's stderr has been read to its end.
	c.Kill()
	var line string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "configuring") {
			line = l
		}
	}
	if !strings.Contains(line, "configuring: ") || !strings.Contains(line, "configure_for=0s") || strings.Contains(line, "@message") {
		t.Errorf("the host's line for the plugin's entry: %q; want the entry's message and fields\nwhole log:\n%s", line, out.String())
	}
}
