package scanner

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The probes cost a clamd that does look about a second of CPU. A
// long-running engine pays that once per clamd; a one-shot `microengine
// scan` would pay it on every run. So what they found is kept on disk, per
// clamd process: a clamd reads its limits from clamd.conf only when it
// starts (RELOAD reloads signatures, not the config), so the same process
// keeps the same limits. The process is told by its pid and start time,
// which the kernel gives for the peer of a unix socket (SO_PEERCRED) and
// /proc for the pid. A clamd over TCP cannot be told apart that way, and is
// probed by every plugin process.
//
// The folder is the user's own (0700, checked), so that another local user
// cannot plant a finding.

// probeCacheEntry is one stored finding.
type probeCacheEntry struct {
	Identity string     `json:"identity"`
	State    trustState `json:"state"`
	Findings []string   `json:"findings,omitempty"`
	Fix      string     `json:"fix,omitempty"`
}

// probeCache stores probe findings in a folder.
type probeCache struct{ dir string }

// newProbeCache returns the cache in the user's cache folder, or nil when
// there is none to use.
func newProbeCache() *probeCache {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "microengine", "clamd-probes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil
	}
	if !ownPrivateDir(dir) {
		return nil
	}
	return &probeCache{dir: dir}
}

func (c *probeCache) path(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return filepath.Join(c.dir, hex.EncodeToString(sum[:16])+".json")
}

// get returns the finding stored for identity.
func (c *probeCache) get(identity string) (trust, bool) {
	if c == nil || identity == "" {
		return trust{}, false
	}
	b, err := os.ReadFile(c.path(identity))
	if err != nil {
		return trust{}, false
	}
	var e probeCacheEntry
	if json.Unmarshal(b, &e) != nil || e.Identity != identity {
		return trust{}, false
	}
	switch e.State {
	case trustPassed, trustFailed:
		return trust{state: e.State, findings: e.Findings, fix: e.Fix}, true
	}
	return trust{}, false
}

// put stores a settled finding (passed or failed; not one the probes could
// not make).
func (c *probeCache) put(identity string, t trust) error {
	if c == nil || identity == "" || (t.state != trustPassed && t.state != trustFailed) {
		return nil
	}
	b, err := json.Marshal(probeCacheEntry{Identity: identity, State: t.state, Findings: t.findings, Fix: t.fix})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(c.dir, "entry-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), c.path(identity)); err != nil {
		return err
	}
	c.prune()
	return nil
}

// probeCacheMaxAge: entries of clamd processes long gone are removed; one
// is written per clamd start.
const probeCacheMaxAge = 30 * 24 * time.Hour

func (c *probeCache) prune() {
	entries, _ := os.ReadDir(c.dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > probeCacheMaxAge {
			os.Remove(filepath.Join(c.dir, e.Name()))
		}
	}
}

// clamdIdentity names the clamd process listening on a unix socket: the
// socket, its pid and its start time. "" when that cannot be known.
func clamdIdentity(network, addr string) string {
	if network != "unix" {
		return ""
	}
	pid, err := peerPid(addr)
	if err != nil || pid <= 0 {
		return ""
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// Field 22 is the start time; the command name (field 2) may hold
	// blanks, so count from its closing parenthesis.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return fmt.Sprintf("%s pid %d start %s", addr, pid, f[19])
}

var errNoPeer = errors.New("no peer credentials")

// ownPrivateDir reports whether dir is a folder of ours that no one else
// may write to.
func ownPrivateDir(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}
