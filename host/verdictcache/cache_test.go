package verdictcache

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/microengine/microengine/shared"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func sha(i int) string { return fmt.Sprintf("%064x", i) }

var scanners = []Scanner{{Name: "clamav", Version: "0.1.0", VendorVersion: "ClamAV 1.4.6", SignaturesVersion: "27000"}}

func key(t *testing.T, i int) Key {
	t.Helper()
	k, ok := NewKey(sha(i), scanners)
	if !ok {
		t.Fatal("bad key")
	}
	return k
}

func benign() Entry {
	return Entry{Verdict: shared.VerdictBenign, Confidence: 1, Plugins: []Verdict{{Name: "clamav", Verdict: shared.VerdictBenign, Confidence: 1}}}
}

func malicious(family string) Entry {
	return Entry{Verdict: shared.VerdictMalicious, Confidence: 0.9, MalwareFamily: family, Plugins: []Verdict{{Name: "clamav", Verdict: shared.VerdictMalicious, Confidence: 0.9, MalwareFamily: family}}}
}

func TestKeysChangeWithEveryVersion(t *testing.T) {
	base, _ := NewKey(sha(1), scanners)
	for _, change := range []func(*Scanner){
		func(s *Scanner) { s.Name = "clamav2" },
		func(s *Scanner) { s.Version = "0.1.1" },
		func(s *Scanner) { s.VendorVersion = "ClamAV 1.4.7" },
		func(s *Scanner) { s.SignaturesVersion = "27001" },
		func(s *Scanner) { s.Identity = "other binary" },
	} {
		sc := scanners[0]
		change(&sc)
		if k, _ := NewKey(sha(1), []Scanner{sc}); k == base {
			t.Errorf("%+v gives the same key as %+v", sc, scanners[0])
		}
	}
	two := []Scanner{scanners[0], {Name: "yara", Version: "1"}}
	a, _ := NewKey(sha(1), two)
	b, _ := NewKey(sha(1), []Scanner{two[1], two[0]})
	if a != b || a == base {
		t.Error("the order of scanners changes the key, or adding one does not")
	}
	if _, ok := NewKey("not hex", scanners); ok {
		t.Error("a bad sha256 made a key")
	}
}

func TestOnlyBenignAndMaliciousAreKept(t *testing.T) {
	c := New(Config{TTL: time.Hour, MaxEntries: 10}, "", nil)
	unknown := Entry{Verdict: shared.VerdictUnknown, Plugins: []Verdict{{Name: "clamav", Verdict: shared.VerdictUnknown}}}
	suspicious := Entry{Verdict: shared.VerdictSuspicious, Plugins: []Verdict{{Name: "clamav", Verdict: shared.VerdictSuspicious}}}
	// Malicious overall, but one plugin could not judge: not kept either.
	partial := malicious("X")
	partial.Plugins = append(partial.Plugins, Verdict{Name: "yara", Verdict: shared.VerdictUnknown})
	for i, e := range []Entry{unknown, suspicious, partial, {Verdict: shared.VerdictBenign}} {
		c.Put(key(t, i), e)
		if _, ok := c.Get(key(t, i)); ok {
			t.Errorf("%+v was cached", e)
		}
	}
	c.Put(key(t, 10), benign())
	c.Put(key(t, 11), malicious("Eicar"))
	if e, ok := c.Get(key(t, 11)); !ok || e.MalwareFamily != "Eicar" {
		t.Fatalf("malicious: %+v %v", e, ok)
	}
	if s := c.Stats(); s.Hits != 1 || s.Misses != 4 || s.Entries != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTTLAndBounds(t *testing.T) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	c := New(Config{TTL: time.Hour, MaxEntries: 3}, "", clk.now)
	for i := range 4 {
		c.Put(key(t, i), benign())
	}
	if _, ok := c.Get(key(t, 0)); ok {
		t.Error("the oldest entry survived max_entries")
	}
	c.Get(key(t, 1)) // now the most recently used
	c.Put(key(t, 4), benign())
	if _, ok := c.Get(key(t, 1)); !ok {
		t.Error("a recently used entry was evicted before an older one")
	}
	if _, ok := c.Get(key(t, 2)); ok {
		t.Error("the least recently used entry survived")
	}
	clk.t = clk.t.Add(time.Hour)
	if _, ok := c.Get(key(t, 1)); ok {
		t.Error("an entry was served past its TTL")
	}
	s := c.Stats()
	if s.Evictions != 2 || s.Expired != 1 {
		t.Errorf("stats %+v", s)
	}

	// Bytes: each entry is estimated at entryOverhead and more.
	b := New(Config{TTL: time.Hour, MaxEntries: 1000, MaxBytes: 10 * entryOverhead}, "", nil)
	for i := range 50 {
		b.Put(key(t, i), malicious(strings.Repeat("F", 100)))
	}
	if s := b.Stats(); s.Bytes > 10*entryOverhead || s.Entries >= 10 || s.Entries == 0 {
		t.Errorf("bytes bound: %+v", s)
	}
}

func TestSavedAndLoaded(t *testing.T) {
	clk := &clock{t: time.Unix(1_000_000, 0)}
	path := filepath.Join(t.TempDir(), FileName)
	cfg := Config{TTL: time.Hour, MaxEntries: 100}
	c, err := Open(cfg, path, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	c.Put(key(t, 1), malicious("Win.Test.EICAR"))
	clk.t = clk.t.Add(30 * time.Minute)
	c.Put(key(t, 2), benign())
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}

	d, err := Open(cfg, path, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := d.Get(key(t, 1)); !ok || e.MalwareFamily != "Win.Test.EICAR" || e.Plugins[0].Name != "clamav" || e.Confidence != 0.9 {
		t.Fatalf("after a restart: %+v %v", e, ok)
	}
	// The TTL runs from when the verdict was kept, not from the restart.
	clk.t = clk.t.Add(45 * time.Minute)
	e, err := Open(cfg, path, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Get(key(t, 1)); ok {
		t.Error("an expired entry was loaded")
	}
	if _, ok := e.Get(key(t, 2)); !ok {
		t.Error("a live entry was not loaded")
	}

	// A TTL lowered since the save applies to the entries on file: key 2,
	// kept 45 minutes ago under an hour, has 15 minutes left; under a
	// 10-minute TTL it has 10.
	short, err := Open(Config{TTL: 10 * time.Minute, MaxEntries: 100}, path, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(11 * time.Minute)
	if _, ok := short.Get(key(t, 2)); ok {
		t.Error("an entry outlived the TTL configured when it was loaded")
	}
	clk.t = clk.t.Add(-11 * time.Minute)

	// A damaged file is set aside: an empty cache and an error.
	raw, _ := os.ReadFile(path)
	raw[len(raw)/2] ^= 0xff
	os.WriteFile(path, raw, 0o600)
	f, err := Open(cfg, path, clk.now)
	if err == nil || f.Stats().Entries != 0 {
		t.Fatalf("damaged file: %v, %+v", err, f.Stats())
	}
	f.Put(key(t, 3), benign())
	if err := f.Save(); err != nil {
		t.Fatal(err)
	}
	if g, err := Open(cfg, path, clk.now); err != nil || g.Stats().Entries != 1 {
		t.Fatalf("rewritten file: %v %+v", err, g.Stats())
	}
}

func TestMetrics(t *testing.T) {
	c := New(Config{TTL: time.Hour, MaxEntries: 1}, "", nil)
	c.Put(key(t, 1), benign())
	c.Put(key(t, 2), benign()) // evicts 1
	c.Get(key(t, 2))
	c.Get(key(t, 1))
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		m := f.GetMetric()[0]
		if m.GetCounter() != nil {
			got[f.GetName()] = m.GetCounter().GetValue()
		} else {
			got[f.GetName()] = m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"microengine_verdict_cache_hits_total": 1, "microengine_verdict_cache_misses_total": 1,
		"microengine_verdict_cache_evictions_total": 1, "microengine_verdict_cache_expired_total": 0,
		"microengine_verdict_cache_entries": 1,
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], v, got)
		}
	}
	if got["microengine_verdict_cache_bytes"] <= 0 {
		t.Errorf("bytes gauge %v", got["microengine_verdict_cache_bytes"])
	}
}

// referenceDigest is ScannersDigest as first written, with fmt: keys must
// not change with how they are computed, or every saved cache misses once
// after an upgrade.
func referenceDigest(scanners []Scanner) [16]byte {
	s := append([]Scanner(nil), scanners...)
	sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
	h := sha256.New()
	for _, sc := range s {
		fmt.Fprintf(h, "%d:%s%d:%s%d:%s%d:%s%d:%s;", len(sc.Name), sc.Name, len(sc.Version), sc.Version,
			len(sc.VendorVersion), sc.VendorVersion, len(sc.SignaturesVersion), sc.SignaturesVersion, len(sc.Identity), sc.Identity)
	}
	var out [16]byte
	copy(out[:], h.Sum(nil))
	return out
}

func TestScannersDigestKeepsItsBytes(t *testing.T) {
	long := strings.Repeat("x", 700)
	sets := [][]Scanner{
		nil,
		scanners,
		{{Name: "yara", Version: "2", Identity: "abc:def"}, scanners[0], {Name: "\x00policy", Version: "quorum=1;6:clamav=,0.8"}},
		{{Name: "\x00artifact", Version: "8:filename4:a.js;"}, {Name: "é", VendorVersion: long, SignaturesVersion: "27000"}, {Name: ""}},
	}
	for i, set := range sets {
		if got, want := ScannersDigest(set), referenceDigest(set); got != want {
			t.Errorf("set %d: digest %x, want %x", i, got, want)
		}
	}
	unsorted := []Scanner{{Name: "b"}, {Name: "a"}}
	ScannersDigest(unsorted)
	if unsorted[0].Name != "b" {
		t.Error("ScannersDigest sorted its argument in place")
	}
}
