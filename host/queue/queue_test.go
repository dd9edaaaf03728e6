package queue

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/microengine/microengine/host/config"
)

// TestEmbeddedNodeComesBackAfterADiskFull: a full disk leaves the
// embedded node's file store failing every later write ("Critical write
// error", kept until the stream is loaded again), or nats-server shuts
// JetStream down ("out of resources"). The node is the engine's only
// store: before the node was restarted on its own, once a full disk was
// freed every later bounty was refused and the accepted ones stayed
// unanswered until a restart (measured against microengine run: 60 of 62
// accepted bounties never answered). Writes must be taken again once
// there is room, and what the node held is kept.
func TestEmbeddedNodeComesBackAfterADiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs as the data directory")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })

	ctx := context.Background()
	n, err := Open(ctx, nil, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	s, err := n.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.JS.Publish(ctx, "t.kept", []byte("before the disk filled")); err != nil {
		t.Fatal(err)
	}

	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	refused := false
	for i := 0; i < 50 && !refused; i++ {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := n.JS.Publish(pctx, "t.more", bytes.Repeat([]byte("x"), 32<<10))
		cancel()
		refused = err != nil
	}
	if !refused {
		t.Fatal("writes still taken on a full disk: the test's premise does not hold")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}

	// The engine writes through Node.Retry, which restarts a node whose
	// writes go unanswered.
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := n.Retry(ctx, nil, func(ctx context.Context) error {
			_, err := n.JS.Publish(ctx, "t.after", []byte("after the disk was freed"))
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write taken within 15s of the disk being freed: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling the node's recovery
	}
	s, err = n.JS.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.GetLastMsgForSubject(ctx, "t.kept"); err != nil || string(m.Data) != "before the disk filled" {
		t.Errorf("the message written before the disk filled: %v %v", m, err)
	}
}

// TestConnectWaitsForJetStream: a cluster node restarted mid-election
// takes connections before its JetStream answers. An engine started then
// failed at once ("jetstream not enabled", or no responders) instead of
// joining once the cluster was back; it now waits, up to its start's
// deadline.
func TestConnectWaitsForJetStream(t *testing.T) {
	dir := t.TempDir()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	connected := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var node *Node
	go func() {
		var err error
		node, err = Open(ctx, &config.Queue{Servers: []string{srv.ClientURL()}, Replicas: 1}, dir, nil)
		connected <- err
	}()
	// Still connecting while JetStream is off: it is waited for, not given
	// up on. Enabled once the engine has been refused at least once.
	deadline := time.Now().Add(10 * time.Second)
	for srv.NumClients() == 0 {
		select {
		case err := <-connected:
			t.Fatalf("the engine gave up while JetStream was off: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the engine did not connect")
		}
	}
	select {
	case err := <-connected:
		t.Fatalf("the engine gave up while JetStream was off: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := srv.EnableJetStream(&server.JetStreamConfig{StoreDir: dir}); err != nil {
		t.Fatal(err)
	}
	if err := <-connected; err != nil {
		t.Fatalf("once JetStream is on: %v", err)
	}
	node.Close()
}
