// Package benchwork holds the workload the scanner plugins' benchmarks
// share (the shapes users compare: one large artifact, thousands of small
// files, a memory measurement), so every plugin is measured on the same
// one, and the tmpfs folder they write it to.
package benchwork

import (
	"os"
	"testing"
)

// The workload.
const (
	// LargeSize is the large artifact's size.
	LargeSize = 200 << 20
	// FileSize and Files are the small files' size and count.
	FileSize = 4 << 10
	Files    = 4000
	// Concurrency is how many artifacts are scanned at once.
	Concurrency = 4
	// MemorySize is the artifact of the memory measurement.
	MemorySize = 512 << 20
)

// TempDir is a folder on tmpfs (/dev/shm) when there is one, so disk
// writeback does not swing the figures; removed when tb ends.
func TempDir(tb testing.TB, prefix string) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", prefix); err == nil {
			tb.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return tb.TempDir()
}
