package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/marketplace"
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
	var ids []int64
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var r marketplace.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if r.State != marketplace.StateOpen {
			t.Errorf("bounty %d: %s", r.Bounty.ID, r.State)
		}
		ids = append(ids, r.Bounty.ID)
	}
	if len(ids) != 2 || ids[0] != 2 || ids[1] != 1 {
		t.Errorf("listed %v, want [2 1] (newest first)", ids)
	}
}
