package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/pluginmgr"
	"github.com/microengine/microengine/host/verdictcache"
	pluginlaunch "github.com/microengine/microengine/shared/launch"
)

// openVerdictCache opens the verdict cache in data_dir, or returns nil
// when the cache block turns it off. A cache file that cannot be read is
// logged and replaced: the cache starts empty, scans go on.
func openVerdictCache(cfg *config.Config, log hclog.Logger) *verdictcache.Cache {
	if !cfg.Cache.Enabled {
		return nil
	}
	c, err := verdictcache.Open(verdictcache.Config{
		TTL: cfg.Cache.TTL, MaxEntries: cfg.Cache.MaxEntries, MaxBytes: cfg.Cache.MaxBytes,
	}, filepath.Join(cfg.Engine.DataDir, verdictcache.FileName), nil)
	if err != nil {
		log.Warn("verdict cache", "error", err)
	}
	return c
}

// pluginOptions are the plugin manager's options for a command that keeps
// the verdict cache: its key names each plugin binary by its sha256, which
// is remembered in data_dir beside the cache (hashing a 20 MB plugin was
// ~10 ms of CPU at every start, a fifth of a one-file scan's).
func pluginOptions(cfg *config.Config) pluginmgr.Options {
	if !cfg.Cache.Enabled {
		return pluginmgr.Options{}
	}
	return pluginmgr.Options{DigestDir: filepath.Join(cfg.Engine.DataDir, pluginlaunch.DigestDirName)}
}

// saveVerdictCache writes what changed; a failure costs only the next
// start's hits.
func saveVerdictCache(c *verdictcache.Cache, log hclog.Logger) {
	if c == nil {
		return
	}
	if err := c.Save(); err != nil {
		log.Warn("cannot save the verdict cache", "error", err)
	}
}

// maxHashedFile is the largest file `scan` hashes to look it up in the
// verdict cache. Hashing is not free beside a scan: sha256 ran at ~660
// MB/s here (2 busy cores), a third of the time clamd takes over a 200 MiB
// file, paid on every run for a hit that a CLI run rarely gets; small
// files, where a hit saves a whole scan round trip, are hashed.
const maxHashedFile = 16 << 20

// hashBufferSize is the read size of fileSHA256.
const hashBufferSize = 64 << 10

// hashBuffer returns *buf grown, if need be, to hold a file of size bytes
// whole (up to hashBufferSize): 64 workers each starting with the largest
// buffer were 4 MiB, a quarter of what `scan` of 4,000 × 4 KiB files
// allocated, for files that need 4 KiB.
func hashBuffer(buf *[]byte, size int64) []byte {
	if need := int(min(max(size, 1), hashBufferSize)); len(*buf) < need {
		// Whole pages, at least 16 KiB: a few sizes, not one per file.
		*buf = make([]byte, min(hashBufferSize, max(16<<10, (need+4095)&^4095)))
	}
	return *buf
}

// fileSHA256 hashes the first size bytes of f without moving its offset,
// reading through buf.
func fileSHA256(f *os.File, size int64, buf []byte) (string, error) {
	h := sha256.New()
	if size <= int64(len(buf)) {
		// One pread, not a second one to see the end: a small file's
		// hash was two syscalls of the host's dozen per file.
		n, err := f.ReadAt(buf[:size], 0)
		if err != nil && !(err == io.EOF && int64(n) == size) {
			return "", fmt.Errorf("hash %s: %w", f.Name(), err)
		}
		h.Write(buf[:n])
		return hex.EncodeToString(h.Sum(nil)), nil
	}
	if _, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, size), buf); err != nil {
		return "", fmt.Errorf("hash %s: %w", f.Name(), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// cacheSaveInterval is how often a running engine saves the verdict cache
// when it changed, so a crash loses at most this much of it.
const cacheSaveInterval = time.Minute

func saveVerdictCacheEvery(ctx context.Context, c *verdictcache.Cache, every time.Duration, log hclog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			saveVerdictCache(c, log)
		}
	}
}
