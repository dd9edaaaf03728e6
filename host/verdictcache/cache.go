// Package verdictcache keeps composed verdicts by the artifact's sha256
// and the exact plugins that produced them, so the same popular artifact
// is not fetched and scanned again and again.
//
// A key is the content's sha256 and a digest of every scanning plugin's
// name, version, vendor version, signatures version and identity (its
// binary's sha256 and its config): a plugin swap, a config change or a
// signature reload changes the key, so a verdict is never served for a
// set of scanners that did not produce it. Only benign and malicious
// verdicts that every plugin gave without a fault are kept; unknown never
// is. The cache is bounded by entries and by bytes (least recently used
// go first), entries expire after the TTL, and it is saved to a file
// (in data_dir) and loaded at the next start.
package verdictcache

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microengine/microengine/shared"
)

// FileName is the cache's file in data_dir.
const FileName = "verdicts.cache"

// Key identifies one cached verdict.
type Key struct {
	SHA256 [sha256.Size]byte
	// Scanners digests the plugins that produced the verdict (see
	// ScannersDigest).
	Scanners [16]byte
}

// Scanner is one plugin's part in a key.
type Scanner struct {
	Name, Version, VendorVersion, SignaturesVersion string
	// Identity names the binary and config behind the verdicts, when known.
	Identity string
}

// ScannersDigest digests a set of scanners, in any order: the sha256 of
// "len:name" "len:version" "len:vendor version" "len:signatures version"
// "len:identity" ";" for each, in name order. (Written with strconv into
// one buffer, not fmt into the hash: a key is built for every artifact.)
func ScannersDigest(scanners []Scanner) [16]byte {
	s := scanners
	if !slices.IsSortedFunc(s, byName) {
		s = slices.Clone(scanners)
		slices.SortStableFunc(s, byName)
	}
	b := make([]byte, 0, 512)
	for _, sc := range s {
		// Lengths first, so no two sets of strings hash alike.
		for _, f := range [...]string{sc.Name, sc.Version, sc.VendorVersion, sc.SignaturesVersion, sc.Identity} {
			b = strconv.AppendInt(b, int64(len(f)), 10)
			b = append(b, ':')
			b = append(b, f...)
		}
		b = append(b, ';')
	}
	sum := sha256.Sum256(b)
	var out [16]byte
	copy(out[:], sum[:])
	return out
}

func byName(a, b Scanner) int { return strings.Compare(a.Name, b.Name) }

// NewKey builds a key from a lowercase hex sha256; ok is false when it is
// not one.
func NewKey(sha256Hex string, scanners []Scanner) (Key, bool) {
	var k Key
	if len(sha256Hex) != 2*sha256.Size {
		return k, false
	}
	if _, err := hex.Decode(k.SHA256[:], []byte(sha256Hex)); err != nil {
		return k, false
	}
	k.Scanners = ScannersDigest(scanners)
	return k, true
}

// Verdict is what is kept of one plugin's answer.
type Verdict struct {
	Name          string
	Verdict       shared.Verdict
	Confidence    float64
	MalwareFamily string
	Heuristic     bool
}

// Entry is a cached composed verdict.
type Entry struct {
	Verdict       shared.Verdict
	Confidence    float64
	MalwareFamily string
	Heuristic     bool
	Plugins       []Verdict
}

// size estimates the memory an entry takes: the map slot, the list
// element, the record and its strings.
func (e *Entry) size() int64 {
	n := int64(entryOverhead + len(e.MalwareFamily) + len(e.Verdict))
	for _, p := range e.Plugins {
		n += int64(pluginOverhead + len(p.Name) + len(p.MalwareFamily) + len(p.Verdict))
	}
	return n
}

// Estimated fixed costs, in bytes, of an entry and of each plugin's part
// (map bucket share, list element, record, slice header).
const (
	entryOverhead  = 240
	pluginOverhead = 72
)

// Cacheable reports whether a composed verdict may be kept: benign or
// malicious, and every plugin's own answer benign or malicious too.
func (e *Entry) Cacheable() bool {
	if e.Verdict != shared.VerdictBenign && e.Verdict != shared.VerdictMalicious {
		return false
	}
	if len(e.Plugins) == 0 {
		return false
	}
	for _, p := range e.Plugins {
		if p.Verdict != shared.VerdictBenign && p.Verdict != shared.VerdictMalicious {
			return false
		}
	}
	return true
}

// Config bounds a cache.
type Config struct {
	TTL        time.Duration
	MaxEntries int
	MaxBytes   int64
}

// Cache is safe for concurrent use.
type Cache struct {
	cfg  Config
	path string
	now  func() time.Time

	mu    sync.Mutex
	items map[Key]*list.Element
	lru   *list.List // front: most recently used
	bytes int64
	dirty bool

	hits, misses, evictions, expired atomic.Uint64
}

type item struct {
	key     Key
	expires int64 // unix nanoseconds
	entry   Entry
	size    int64
}

// New returns an empty cache that Save writes to path ("" for none).
func New(cfg Config, path string, now func() time.Time) *Cache {
	if now == nil {
		now = time.Now
	}
	return &Cache{cfg: cfg, path: path, now: now, items: map[Key]*list.Element{}, lru: list.New()}
}

// Get returns the entry for k if it is there and has not expired.
func (c *Cache) Get(k Key) (Entry, bool) {
	now := c.now().UnixNano()
	c.mu.Lock()
	el, ok := c.items[k]
	if ok {
		it := el.Value.(*item)
		if it.expires <= now {
			c.remove(el)
			c.expired.Add(1)
			ok = false
		} else {
			c.lru.MoveToFront(el)
			e := it.entry
			c.mu.Unlock()
			c.hits.Add(1)
			return e, true
		}
	}
	c.mu.Unlock()
	c.misses.Add(1)
	return Entry{}, false
}

// Put keeps e under k for the TTL, if it is cacheable, evicting the least
// recently used entries over the bounds.
func (c *Cache) Put(k Key, e Entry) {
	if !e.Cacheable() {
		return
	}
	e.Plugins = append([]Verdict(nil), e.Plugins...)
	c.put(k, e, c.now().Add(c.cfg.TTL).UnixNano())
}

func (c *Cache) put(k Key, e Entry, expires int64) {
	it := &item{key: k, expires: expires, entry: e, size: e.size()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.remove(el)
	}
	c.items[k] = c.lru.PushFront(it)
	c.bytes += it.size
	c.dirty = true
	for c.lru.Len() > 0 && (c.lru.Len() > c.cfg.MaxEntries || (c.cfg.MaxBytes > 0 && c.bytes > c.cfg.MaxBytes)) {
		c.remove(c.lru.Back())
		c.evictions.Add(1)
	}
}

// remove drops an element; c.mu is held.
func (c *Cache) remove(el *list.Element) {
	it := el.Value.(*item)
	c.lru.Remove(el)
	delete(c.items, it.key)
	c.bytes -= it.size
	c.dirty = true
}

// Stats are the cache's counters since it was made.
type Stats struct {
	Entries                          int
	Bytes                            int64
	Hits, Misses, Evictions, Expired uint64
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	n, b := c.lru.Len(), c.bytes
	c.mu.Unlock()
	return Stats{Entries: n, Bytes: b, Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load(), Expired: c.expired.Load()}
}
