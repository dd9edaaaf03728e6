package main

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/shared"
	"github.com/microengine/microengine/shared/conformance"
)

// TestConformance runs the plugin contract's suite against the built
// plugin and a private clamd, with the shipped marker signatures as extra
// samples. The BACKEND checks kill that clamd. A SHOULD check that fails
// fails the test.
func TestConformance(t *testing.T) {
	// Room for the suite's 64 MiB artifact, in clamd and in the plugin.
	d := devclamd.StartT(t, devclamd.Options{StreamMaxLength: 100 << 20})
	marker := []byte("MICROENGINE-TEST-" + "MARKER-ALPHA")
	conformance.Run(t, conformance.Config{
		Plugin:       pluginBinary,
		PluginConfig: []byte(fmt.Sprintf(`{"address":%q,"max_stream_size":"100M"}`, d.Address())),
		Samples: []shared.Sample{
			{Name: "marker-alpha.txt", Content: marker, Verdict: shared.VerdictMalicious, MalwareFamily: "MicroEngine.Test.Marker.Alpha.UNOFFICIAL"},
			{Name: "zipped-marker.zip", Content: zipped(t, []byte("MICROENGINE-TEST-"+"MARKER-ZIPPED")), Verdict: shared.VerdictMalicious,
				MalwareFamily: "MicroEngine.Test.Marker.Zipped.UNOFFICIAL"},
		},
		StopBackend: func(context.Context) error {
			d.Kill()
			return nil
		},
		// Strict: the project's own plugins meet the SHOULD checks too
		// (STDOUT-002 is checked for clamav nowhere else).
		Strict: true,
	})
}

func zipped(t *testing.T, content []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("inner.txt")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(content)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
