package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/marketplace"
	"github.com/microengine/microengine/host/marketplace/bountiesdb"
	"github.com/microengine/microengine/host/marketplace/bountiesdb/bountiesdbtest"
	"github.com/microengine/microengine/host/queue"
)

// TestBountiesReadsTheEmbeddedNode: with no engine running, `microengine
// bounties -data DIR` starts the embedded JetStream node to list what it
// holds; while an engine holds the node it says so.
func TestBountiesReadsTheEmbeddedNode(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	var stdout, stderr bytes.Buffer
	if code := runBounties(ctx, []string{"-data", dir, "-json"}, &stdout, &stderr); code != 0 || stdout.Len() != 0 {
		t.Fatalf("empty data dir: exit %d, %q %q", code, stdout.String(), stderr.String())
	}

	st := storeBounties(t, dir, 1, 2)
	stdout.Reset()
	stderr.Reset()
	if code := runBounties(ctx, []string{"-data", dir}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "running engine") {
		t.Errorf("while held: exit %d, %q", code, stderr.String())
	}
	st.Close()

	stdout.Reset()
	if code := runBounties(ctx, []string{"-data", dir, "-json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := listed(t, stdout.String()); got != "2:open 1:open" {
		t.Errorf("listed %s, want 2:open 1:open (newest first)", got)
	}
}

// TestBountiesListsTheAuditStream: finished bounties are listed from the
// audit stream, once each (their records are still kept too), the most
// recently finished first, after the open ones; -limit stops early and
// -oldest-first reverses it all.
func TestBountiesListsTheAuditStream(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	st := storeBounties(t, dir, 1, 2, 3)
	for _, f := range []struct {
		id    int64
		state marketplace.State
	}{{2, marketplace.StateAnswered}, {3, marketplace.StateExpired}} {
		if ok, err := st.Finish(ctx, testBounty(f.id).Key(), marketplace.Outcome{State: f.state, At: time.Now()}); err != nil || !ok {
			st.Close()
			t.Fatalf("finish %d: %v, %v", f.id, ok, err)
		}
	}
	st.Close()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "1:open 3:expired 2:answered"},
		{[]string{"-limit", "2"}, "1:open 3:expired"},
		{[]string{"-oldest-first"}, "2:answered 3:expired 1:open"},
		{[]string{"-state", "answered"}, "2:answered"},
	} {
		var stdout, stderr bytes.Buffer
		if code := runBounties(ctx, append([]string{"-data", dir, "-json"}, c.args...), &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, stderr.String())
		}
		if got := listed(t, stdout.String()); got != c.want {
			t.Errorf("%v: listed %s, want %s", c.args, got, c.want)
		}
	}
}

// listed reads `bounties -json` output as "ID:STATE ...".
func listed(t *testing.T, out string) string {
	t.Helper()
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r marketplace.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		got = append(got, fmt.Sprintf("%d:%s", r.Bounty.ID, r.State))
	}
	return strings.Join(got, " ")
}

// storeBounties opens the embedded node in dir, as an engine holds it,
// and stores open bounties of ids.
func storeBounties(t *testing.T, dir string, ids ...int64) *marketplace.JetStore {
	t.Helper()
	ctx := context.Background()
	node, err := queue.Open(ctx, nil, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := marketplace.OpenJetStore(ctx, node, config.DefaultRetention, nil)
	if err != nil {
		node.Close()
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := st.Put(ctx, testBounty(id), "", time.Now()); err != nil {
			st.Close()
			t.Fatal(err)
		}
	}
	return st
}

func testBounty(id int64) marketplace.Bounty {
	return marketplace.Bounty{ID: id, ArtifactType: "file", ArtifactURI: "http://x/a", Expiration: time.Now().Add(time.Hour),
		ResponseURL: "http://x/r", Phase: marketplace.PhaseAssertion, Rules: marketplace.DefaultRules()}
}

// TestBountiesReadsAnOldBountiesDB: a bounties.db no engine of this
// version has moved into JetStream yet is listed from the file; one moved
// in part follows what JetStream holds; while an engine of an older
// version holds it, that is said.
func TestBountiesReadsAnOldBountiesDB(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, bountiesdb.File)
	var recs []bountiesdbtest.Record
	for _, id := range []int64{5, 6} {
		r := marketplace.Record{State: marketplace.StateAnswered, ReceivedAt: time.Now(), Bounty: testBounty(id)}
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, bountiesdbtest.Record{Key: r.Bounty.Key(), Raw: raw})
	}
	bountiesdbtest.Write(t, path, recs...)
	ctx := context.Background()
	var stdout, stderr bytes.Buffer
	if code := runBounties(ctx, []string{"-data", dir, "-json", "-oldest-first"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := listed(t, stdout.String()); got != "5:answered 6:answered" {
		t.Errorf("listed %s, want 5:answered 6:answered", got)
	}
	if _, err := os.Stat(filepath.Join(dir, queue.StoreDir)); err == nil {
		t.Error("listing bounties.db created the embedded node's folder")
	}

	// Moved in part: JetStream holds 5 (open again, as a redelivery would
	// leave it) and 7, the file still 5 and 6.
	storeBounties(t, dir, 5, 7).Close()
	stdout.Reset()
	if code := runBounties(ctx, []string{"-data", dir, "-json", "-oldest-first"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := listed(t, stdout.String()); got != "5:open 7:open 6:answered" {
		t.Errorf("listed %s, want 5:open 7:open 6:answered", got)
	}

	held, err := bolt.Open(path, 0o600, nil) // an engine of an older version
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	stderr.Reset()
	if code := runBounties(ctx, []string{"-data", dir}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "older version") {
		t.Errorf("while held: exit %d, %q", code, stderr.String())
	}
}
