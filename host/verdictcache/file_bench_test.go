package verdictcache

import (
	"path/filepath"
	"testing"
	"time"
)

// benchEntries is a cache's size after four `scan` runs of 4,000 files.
const benchEntries = 16000

// savedCache saves a cache of benchEntries entries (one in 16 malicious)
// and returns its path.
func savedCache(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), FileName)
	c := New(Config{TTL: time.Hour, MaxEntries: 1 << 20}, path, nil)
	for i := range benchEntries {
		k, _ := NewKey(sha(i), scanners)
		if i%16 == 0 {
			c.Put(k, malicious("Win.Test.Family"))
		} else {
			c.Put(k, benign())
		}
	}
	if err := c.Save(); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkOpen is the load each `scan` pays at its start.
func BenchmarkOpen(b *testing.B) {
	path := savedCache(b)
	b.ReportAllocs()
	for b.Loop() {
		c, err := Open(Config{TTL: time.Hour, MaxEntries: 1 << 20}, path, nil)
		if err != nil || c.Stats().Entries != benchEntries {
			b.Fatalf("%v, %d entries", err, c.Stats().Entries)
		}
	}
}

// BenchmarkSave is the rewrite each `scan` that kept a verdict pays at
// its end.
func BenchmarkSave(b *testing.B) {
	c, err := Open(Config{TTL: time.Hour, MaxEntries: 1 << 20}, savedCache(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.mu.Lock()
		c.dirty = true
		c.mu.Unlock()
		if err := c.Save(); err != nil {
			b.Fatal(err)
		}
	}
}
