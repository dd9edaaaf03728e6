package pluginmgr

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/hcl/v2"

	"github.com/microengine/microengine/host/config"
)

// Loader reads engine.hcl afresh.
type Loader func() (*config.Config, hcl.Diagnostics)

// ReloadFromDisk re-reads engine.hcl and reloads. A config that does not
// validate is refused whole; the running set is untouched.
func (m *Manager) ReloadFromDisk(ctx context.Context, load Loader) error {
	cfg, diags := load()
	if diags.HasErrors() {
		return &ReloadError{Diags: diags}
	}
	return m.Reload(ctx, cfg)
}

// watchSettle lets a writer finish: editors and `cp` write a file in several
// steps, and a half-written binary must not be launched.
const watchSettle = 300 * time.Millisecond

// Watch swaps plugins when engine.hcl or a plugin binary changes on disk,
// until ctx is done. It watches folders rather than files, because the safe
// way to replace a binary (write beside it, then rename) replaces the inode
// a file watch would hold.
func (m *Manager) Watch(ctx context.Context, configPath string, load Loader) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch plugin binaries: %w", err)
	}
	defer w.Close()
	watched := map[string]bool{}
	addDirs := func() {
		dirs := []string{filepath.Dir(configPath)}
		for _, p := range m.Config().Plugins {
			dirs = append(dirs, filepath.Dir(p.Path))
		}
		for _, d := range dirs {
			if abs, err := filepath.Abs(d); err == nil && !watched[abs] {
				if err := w.Add(abs); err != nil {
					m.log.Warn("cannot watch folder", "dir", abs, "error", err)
					continue
				}
				watched[abs] = true
			}
		}
	}
	addDirs()
	absConfig, _ := filepath.Abs(configPath)

	var timer <-chan time.Time
	configChanged, binaryChanged := false, false
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			m.log.Warn("file watch error", "error", err)
		case ev := <-w.Events:
			name, _ := filepath.Abs(ev.Name)
			switch {
			case name == absConfig:
				configChanged = true
			case m.isPluginPath(name):
				binaryChanged = true
			default:
				continue
			}
			timer = time.After(watchSettle)
		case <-timer:
			timer = nil
			var err error
			if configChanged {
				m.log.Info("engine.hcl changed; reloading")
				err = m.ReloadFromDisk(ctx, load)
			} else if binaryChanged {
				m.log.Info("a plugin binary changed; reloading")
				err = m.Reload(ctx, m.Config())
			}
			configChanged, binaryChanged = false, false
			if err != nil {
				m.log.Error("reload failed; the running plugins keep serving", "error", err)
			}
			addDirs()
		}
	}
}

func (m *Manager) isPluginPath(name string) bool {
	for _, p := range m.Config().Plugins {
		if abs, err := filepath.Abs(p.Path); err == nil && abs == name {
			return true
		}
	}
	return false
}
