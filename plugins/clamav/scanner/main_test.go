package scanner

import (
	"fmt"
	"os"
	"testing"
)

// TestMain keeps the probe findings the tests produce out of the user's
// cache folder.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "clamav-scanner-cache")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_CACHE_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
