package bountiesdb_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/microengine/microengine/host/marketplace/bountiesdb"
	"github.com/microengine/microengine/host/marketplace/bountiesdb/bountiesdbtest"
)

func key(id byte, phase string) []byte { return append([]byte{0, 0, 0, 0, 0, 0, 0, id}, phase...) }

func list(t *testing.T, db *bountiesdb.DB, newestFirst bool) string {
	t.Helper()
	var got []string
	if err := db.Each(newestFirst, func(k, raw []byte) bool { got = append(got, string(raw)); return true }); err != nil {
		t.Fatal(err)
	}
	return strings.Join(got, " ")
}

// TestEachReadsTheOldLayout: the records come back as stored, in the
// bounty id's order either way, and fn stops the walk.
func TestEachReadsTheOldLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), bountiesdb.File)
	bountiesdbtest.Write(t, path,
		bountiesdbtest.Record{Key: key(2, "assertion"), Raw: []byte(`b`)},
		bountiesdbtest.Record{Key: key(1, "assertion"), Raw: []byte(`a`)},
		bountiesdbtest.Record{Key: key(3, "arbitration"), Raw: []byte(`c`)},
	)
	db, err := bountiesdb.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := list(t, db, false); got != "a b c" {
		t.Errorf("oldest first: %q", got)
	}
	if got := list(t, db, true); got != "c b a" {
		t.Errorf("newest first: %q", got)
	}
	n := 0
	if err := db.Each(false, func(k, raw []byte) bool { n++; return false }); err != nil || n != 1 {
		t.Errorf("a walk fn stopped went on: %d calls, %v", n, err)
	}
}

// TestGetFindsOneRecord: a record by its key, in no index or in one; a key
// the file does not hold gives nil.
func TestGetFindsOneRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), bountiesdb.File)
	bountiesdbtest.Write(t, path,
		bountiesdbtest.Record{Key: key(1, "assertion"), Raw: []byte(`lost`)},
		bountiesdbtest.Record{Key: key(2, "assertion"), Raw: []byte(`open`), Open: true, Expiration: time.Now()},
	)
	db, err := bountiesdb.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for k, want := range map[string]string{string(key(1, "assertion")): "lost", string(key(2, "assertion")): "open", string(key(2, "arbitration")): ""} {
		raw, err := db.Get([]byte(k))
		if err != nil || string(raw) != want || (want == "") != (raw == nil) {
			t.Errorf("Get(%x) = %q, %v; want %q", k, raw, err, want)
		}
	}
}

// TestTheIndexesGiveOpenAndRecentlyFinished: the open records soonest
// expiration first; the finished ones since a time, latest first; a
// record no index holds is left to Each.
func TestTheIndexesGiveOpenAndRecentlyFinished(t *testing.T) {
	path := filepath.Join(t.TempDir(), bountiesdb.File)
	now := time.Now()
	bountiesdbtest.Write(t, path,
		bountiesdbtest.Record{Key: key(1, "assertion"), Raw: []byte(`open-late`), Open: true, Expiration: now.Add(time.Hour)},
		bountiesdbtest.Record{Key: key(2, "assertion"), Raw: []byte(`open-soon`), Open: true, Expiration: now.Add(time.Minute)},
		bountiesdbtest.Record{Key: key(3, "assertion"), Raw: []byte(`done-old`), Finished: now.Add(-48 * time.Hour)},
		bountiesdbtest.Record{Key: key(4, "assertion"), Raw: []byte(`done-1h`), Finished: now.Add(-time.Hour)},
		bountiesdbtest.Record{Key: key(5, "assertion"), Raw: []byte(`done-1m`), Finished: now.Add(-time.Minute)},
		bountiesdbtest.Record{Key: key(6, "assertion"), Raw: []byte(`unindexed`)},
	)
	db, err := bountiesdb.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	walk := func(each func(func(k, raw []byte) bool) error) string {
		var got []string
		if err := each(func(k, raw []byte) bool { got = append(got, string(raw)); return true }); err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, " ")
	}
	if got := walk(db.EachOpen); got != "open-soon open-late" {
		t.Errorf("open: %q", got)
	}
	since := func(fn func(k, raw []byte) bool) error { return db.EachFinishedSince(now.Add(-24*time.Hour), fn) }
	if got := walk(since); got != "done-1m done-1h" {
		t.Errorf("finished in the last day: %q", got)
	}
	if got := list(t, db, false); got != "open-late open-soon done-old done-1h done-1m unindexed" {
		t.Errorf("every record: %q", got)
	}
}

// TestOpenRefusesWhatItCannotRead: a missing file, a file an engine holds
// (busy, not a hang); a file with no bounties bucket and an empty file
// hold nothing.
func TestOpenRefusesWhatItCannotRead(t *testing.T) {
	dir := t.TempDir()
	if _, err := bountiesdb.Open(filepath.Join(dir, "none.db"), time.Second); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}

	path := filepath.Join(dir, bountiesdb.File)
	held, err := bolt.Open(path, 0o600, nil) // an old engine, running
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bountiesdb.Open(path, 50*time.Millisecond); !errors.Is(err, bountiesdb.ErrBusy) {
		t.Errorf("held file: %v, want ErrBusy", err)
	}
	held.Close()

	db, err := bountiesdb.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := list(t, db, false); got != "" {
		t.Errorf("a file without the bucket lists %q", got)
	}

	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err = bountiesdb.Open(empty, time.Second)
	if err != nil {
		t.Fatalf("an empty file: %v", err)
	}
	if got := list(t, db, false); got != "" {
		t.Errorf("an empty file lists %q", got)
	}
	if err := db.Close(); err != nil {
		t.Error(err)
	}
}
