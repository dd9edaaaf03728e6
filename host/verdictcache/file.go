package verdictcache

import (
	"bufio"
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/microengine/microengine/shared"
)

// The file: a magic line, then one record per entry from the least to the
// most recently used, then a CRC-32 of everything before it. It is written
// to a temporary file and renamed over the old one, so a crash leaves the
// previous file; a file that does not check out is not used.
const magic = "microengine verdict cache v1\n"

// maxString bounds a string in the file: names and families are short.
const maxString = 4 << 10

// Open returns a cache saved to path, with what a previous Save left there
// (expired entries dropped). A missing file is an empty cache; a file that
// cannot be read is set aside and the error returned with an empty,
// usable cache.
func Open(cfg Config, path string, now func() time.Time) (*Cache, error) {
	c := New(cfg, path, now)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("verdict cache: %w", err)
	}
	defer f.Close()
	if err := c.load(f); err != nil {
		c.clear()
		return c, fmt.Errorf("verdict cache %s unreadable, starting empty: %w", path, err)
	}
	c.mu.Lock()
	c.dirty = false
	c.mu.Unlock()
	return c, nil
}

func (c *Cache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.items = map[Key]*list.Element{}
	c.lru.Init()
	c.bytes = 0
}

func (c *Cache) load(f *os.File) error {
	data, err := io.ReadAll(bufio.NewReader(f))
	if err != nil {
		return err
	}
	if len(data) < len(magic)+4 || string(data[:len(magic)]) != magic {
		return errors.New("not a verdict cache file")
	}
	body, sum := data[:len(data)-4], binary.BigEndian.Uint32(data[len(data)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return errors.New("checksum mismatch")
	}
	r := &reader{b: body[len(magic):], interned: map[string]string{}}
	// The map is sized for the records at once: growing it entry by entry
	// rehashed it a dozen times (a sixth of a 16,000-entry load).
	c.mu.Lock()
	if len(c.items) == 0 {
		c.items = make(map[Key]*list.Element, min(len(r.b)/minRecord, max(c.cfg.MaxEntries, 0)))
	}
	c.mu.Unlock()
	now := c.now().UnixNano()
	// An entry kept under a longer TTL than the one now configured lives
	// no longer than a verdict kept now: a TTL lowered to age out stale
	// verdicts applies to those already on file too.
	latest := c.now().Add(c.cfg.TTL).UnixNano()
	for len(r.b) > 0 && r.err == nil {
		var k Key
		r.bytes(k.SHA256[:])
		r.bytes(k.Scanners[:])
		expires := int64(r.u64())
		e := Entry{Verdict: shared.Verdict(r.str()), Confidence: r.f64(), MalwareFamily: r.str(), Heuristic: r.bool()}
		n := r.uvarint()
		if n > 1024 {
			return errors.New("implausible plugin count")
		}
		for range n {
			e.Plugins = append(e.Plugins, Verdict{Name: r.str(), Verdict: shared.Verdict(r.str()), Confidence: r.f64(), MalwareFamily: r.str(), Heuristic: r.bool()})
		}
		if r.err == nil && expires > now && e.Cacheable() {
			c.put(k, e, min(expires, latest))
		}
	}
	return r.err
}

// Save writes the cache to its file if it changed since the last Save.
func (c *Cache) Save() error {
	if c.path == "" {
		return nil
	}
	c.mu.Lock()
	if !c.dirty {
		c.mu.Unlock()
		return nil
	}
	items := make([]*item, 0, c.lru.Len())
	for el := c.lru.Back(); el != nil; el = el.Prev() {
		items = append(items, el.Value.(*item))
	}
	c.dirty = false
	c.mu.Unlock()

	if err := c.write(items); err != nil {
		c.mu.Lock()
		c.dirty = true
		c.mu.Unlock()
		return err
	}
	return nil
}

// minRecord is the smallest record with one plugin in the file, to size
// a loaded cache from the file's length.
const minRecord = sha256Size + 16 + 8 + 1 + 8 + 1 + 1 + 1 + 1 + 8 + 1 + 1 + 1

const sha256Size = len(Key{}.SHA256)

func (c *Cache) write(items []*item) error {
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return fmt.Errorf("verdict cache: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), ".verdicts-*")
	if err != nil {
		return fmt.Errorf("verdict cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing is left to remove
	h := crc32.NewIEEE()
	w := bufio.NewWriterSize(io.MultiWriter(tmp, h), 256<<10)
	// One record at a time into one buffer: appending each number through
	// a fresh slice was nine allocations a record.
	var buf []byte
	w.WriteString(magic)
	for _, it := range items {
		buf = append(buf[:0], it.key.SHA256[:]...)
		buf = append(buf, it.key.Scanners[:]...)
		buf = binary.BigEndian.AppendUint64(buf, uint64(it.expires))
		buf = appendStr(buf, string(it.entry.Verdict))
		buf = appendF64(buf, it.entry.Confidence)
		buf = appendStr(buf, it.entry.MalwareFamily)
		buf = appendBool(buf, it.entry.Heuristic)
		buf = binary.AppendUvarint(buf, uint64(len(it.entry.Plugins)))
		for _, p := range it.entry.Plugins {
			buf = appendStr(buf, p.Name)
			buf = appendStr(buf, string(p.Verdict))
			buf = appendF64(buf, p.Confidence)
			buf = appendStr(buf, p.MalwareFamily)
			buf = appendBool(buf, p.Heuristic)
		}
		w.Write(buf)
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("verdict cache: write: %w", err)
	}
	if _, err := tmp.Write(binary.BigEndian.AppendUint32(nil, h.Sum32())); err != nil {
		tmp.Close()
		return fmt.Errorf("verdict cache: write: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("verdict cache: write: %w", err)
	}
	if err := os.Rename(tmp.Name(), c.path); err != nil {
		return fmt.Errorf("verdict cache: %w", err)
	}
	return nil
}

func appendStr(b []byte, s string) []byte {
	if len(s) > maxString {
		s = s[:maxString]
	}
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendF64(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(b, math.Float64bits(f))
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// maxInterned bounds the distinct strings a reader shares.
const maxInterned = 4096

// reader decodes records; the first fault sticks in err.
type reader struct {
	b   []byte
	err error
	// interned shares the strings that recur from record to record
	// (verdicts, plugin names, families): a string each was most of a
	// load's allocations.
	interned map[string]string
}

func (r *reader) bytes(dst []byte) {
	if r.err != nil {
		return
	}
	if len(r.b) < len(dst) {
		r.err = io.ErrUnexpectedEOF
		return
	}
	copy(dst, r.b)
	r.b = r.b[len(dst):]
}

func (r *reader) u64() uint64 {
	var b [8]byte
	r.bytes(b[:])
	return binary.BigEndian.Uint64(b[:])
}

func (r *reader) f64() float64 { return math.Float64frombits(r.u64()) }

func (r *reader) bool() bool {
	var b [1]byte
	r.bytes(b[:])
	return b[0] == 1
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("bad length")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > maxString || uint64(len(r.b)) < n {
		r.err = errors.New("bad string")
		return ""
	}
	b := r.b[:n]
	r.b = r.b[n:]
	if s, ok := r.interned[string(b)]; ok {
		return s
	}
	s := string(b)
	if r.interned != nil && len(r.interned) < maxInterned {
		r.interned[s] = s
	}
	return s
}
