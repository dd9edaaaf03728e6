package main

import (
	"bytes"
	"context"
	"encoding/json"
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

	node, err := queue.Open(ctx, nil, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := marketplace.OpenJetStore(ctx, node, config.DefaultRetention, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{1, 2} {
		b := marketplace.Bounty{ID: id, ArtifactType: "file", ArtifactURI: "http://x/a", Expiration: time.Now().Add(time.Hour),
			ResponseURL: "http://x/r", Phase: marketplace.PhaseAssertion, Rules: marketplace.DefaultRules()}
		if _, err := st.Put(ctx, b, "", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
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
	if ids := listed(t, stdout.String(), marketplace.StateOpen); len(ids) != 2 || ids[0] != 2 || ids[1] != 1 {
		t.Errorf("listed %v, want [2 1] (newest first)", ids)
	}
}

// listed reads the ids of `bounties -json` output, checking each bounty's
// state.
func listed(t *testing.T, out string, state marketplace.State) []int64 {
	t.Helper()
	var ids []int64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r marketplace.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if r.State != state {
			t.Errorf("bounty %d: %s, want %s", r.Bounty.ID, r.State, state)
		}
		ids = append(ids, r.Bounty.ID)
	}
	return ids
}

// TestBountiesReadsAnOldBountiesDB: a bounties.db no engine of this
// version has moved into JetStream yet is listed from the file; while an
// engine of an older version holds it, that is said.
func TestBountiesReadsAnOldBountiesDB(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, bountiesdb.File)
	var recs []bountiesdbtest.Record
	for _, id := range []int64{5, 6} {
		r := marketplace.Record{State: marketplace.StateAnswered, ReceivedAt: time.Now(), Bounty: marketplace.Bounty{ID: id, ArtifactType: "file",
			ArtifactURI: "http://x/a", Expiration: time.Now(), ResponseURL: "http://x/r", Phase: marketplace.PhaseAssertion, Rules: marketplace.DefaultRules()}}
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
	if ids := listed(t, stdout.String(), marketplace.StateAnswered); len(ids) != 2 || ids[0] != 5 || ids[1] != 6 {
		t.Errorf("listed %v, want [5 6]", ids)
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
