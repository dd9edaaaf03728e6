package marketplace

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/microengine/microengine/host/config"
	"github.com/microengine/microengine/host/queue"
)

// clusterNode starts one nats-server of the cluster "forming" on loopback
// ports, routed to the first node, whose cluster port is port (-1: pick
// one for others' routes).
func clusterNode(t *testing.T, name string, port int, route *url.URL) *server.Server {
	t.Helper()
	opts := &server.Options{
		ServerName: name, Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		Cluster: server.ClusterOpts{Name: "forming", Host: "127.0.0.1", Port: port},
		// A clustered JetStream needs a route; the first node's to
		// itself is ignored once it sees its own id.
		Routes: []*url.URL{route},
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatalf("nats-server %s did not start", name)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

// TestStoreOpensBesideAFormingCluster: a cluster answers JetStream
// requests once its meta leader is elected, before all its servers have
// joined, and refuses a stream with more replicas than the servers it
// knows ("no suitable peers for placement", a 400). An engine started
// then (a cluster and its engines started together) failed its start on
// that first answer; it now waits, within its start's bound, for the
// servers to join, and opens its store with the replicas it asked for.
func TestStoreOpensBesideAFormingCluster(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	route := &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", port)}
	n1 := clusterNode(t, "n1", port, route)
	clusterNode(t, "n2", -1, route)

	// Two servers of three: JetStream answers, and refuses three replicas.
	nc, err := nats.Connect(n1.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Replicas: 3})
		cancel()
		if queue.Unplaced(err) {
			break
		}
		if err == nil {
			t.Fatal("two servers placed three replicas: the test cannot show a forming cluster")
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream of two servers did not answer within 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // the meta leader's election: polled
	}
	if apiRefused(err) {
		t.Fatalf("a refusal to place the replicas is taken as final: %v", err)
	}

	var mu sync.Mutex
	var logs strings.Builder
	log := hclog.New(&hclog.LoggerOptions{Output: lockedBuilder{&mu, &logs}, Level: hclog.Warn})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q := config.DefaultQueue()
	q.Servers, q.Replicas = []string{n1.ClientURL()}, 3
	node, err := queue.Open(ctx, &q, t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	var st *JetStore
	go func() {
		var err error
		st, err = OpenJetStore(ctx, node, config.DefaultRetention, log)
		opened <- err
	}()
	// Refused while two servers of three are up, and still waiting.
	deadline = time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		refused := strings.Contains(logs.String(), "cannot place the replicas yet")
		mu.Unlock()
		if refused {
			break
		}
		select {
		case err := <-opened:
			node.Close()
			t.Fatalf("the store opened (or gave up) before the third server joined: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store's start was not refused its replicas within 60s; log:\n%s", logs.String())
		}
	}

	clusterNode(t, "n3", -1, route)
	if err := <-opened; err != nil {
		node.Close()
		t.Fatalf("once the third server joined: %v\nlog:\n%s", err, logs.String())
	}
	defer st.Close()
	info, err := st.auditStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Errorf("the audit stream has %d replicas (cluster %+v), want 3", info.Config.Replicas, info.Cluster)
	}
}
