package shared

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// What the host reads of a plugin's log line: go-plugin decodes it into a
// map[string]any, numbers as float64. Durations, sizes and integers must
// arrive as the text a person writes.
func TestPluginLoggerWritesNumbersAsText(t *testing.T) {
	var out bytes.Buffer
	log := newPluginLogger(&out, "p", hclog.Info).Named("sub").With("limit", Size(4<<10))
	args := []any{"timeout", 30 * time.Second, "max", Size(25 << 20), "bytes", int64(26214400), "n", 8, "u", uint32(7),
		"ratio", 0.5, "name", "x"}
	log.Info("configured", args...)
	log.Debug("not at this level", "d", time.Second)

	var line map[string]any
	if err := json.Unmarshal(out.Bytes(), &line); err != nil {
		t.Fatalf("one JSON line: %v\n%s", err, out.String())
	}
	want := map[string]any{"timeout": "30s", "max": "25MiB", "bytes": "26214400", "n": "8", "u": "7",
		"ratio": 0.5, "name": "x", "limit": "4KiB", "@module": "p.sub", "@message": "configured"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %#v, want %#v (line %s)", k, line[k], v, out.String())
		}
	}
	if args[1] != 30*time.Second {
		t.Errorf("the caller's args were changed: %v", args)
	}
}
