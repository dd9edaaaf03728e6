//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/microengine/microengine/host/simulator"
	"github.com/microengine/microengine/internal/testbin"
	"github.com/microengine/microengine/internal/testproc"
)

// The cluster test's load: short in make test (it must fit .ci/run's
// budget); MICROENGINE_CLUSTER_RATE and MICROENGINE_CLUSTER_SECONDS give
// the 200/s for 60 s (make bench runs BenchmarkClusterLoad).
const (
	clusterRate    = 50
	clusterSeconds = 16
)

// natsNode is one nats-server process of the test's cluster, built from
// the nats-server module the engine embeds (v2.15.2).
type natsNode struct {
	t           testing.TB
	name, dir   string
	bin         string
	conf        string
	client      string // nats://127.0.0.1:port
	cmd         *exec.Cmd
	done        chan struct{}
	log         *lockedBuffer
	clusterPort int
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var natsBin struct {
	once sync.Once
	path string
	err  error
}

func buildNATS(t testing.TB) string {
	t.Helper()
	natsBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "e2e-nats-")
		if err != nil {
			natsBin.err = err
			return
		}
		natsBin.path, natsBin.err = testbin.Build(dir, "nats-server", "github.com/nats-io/nats-server/v2")
	})
	if natsBin.err != nil {
		t.Fatal(natsBin.err)
	}
	return natsBin.path
}

// freePort returns a port free on 127.0.0.1 from below Linux's ephemeral
// range (32768-60999 by default). A node keeps its ports across its kill
// and restart, seconds apart, and a port from the ephemeral range, as
// ":0" gives, may meanwhile become the local port of any outgoing
// connection on the machine (held in TIME_WAIT for a minute after it
// closes), and the restarted node could not listen on it.
func freePort(t testing.TB) int {
	t.Helper()
	const lo, hi = 20000, 32768
	for range 100 {
		port := lo + rand.IntN(hi-lo)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken: another
		}
		l.Close()
		return port
	}
	t.Fatalf("no free port in [%d, %d) after 100 tries", lo, hi)
	return 0
}

// startCluster starts n nats-server processes routed to each other, with
// JetStream on file storage fsynced on every write.
func startCluster(t testing.TB, n int) []*natsNode {
	t.Helper()
	bin := buildNATS(t)
	base, err := os.MkdirTemp("", "e2e-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	nodes := make([]*natsNode, n)
	for i := range nodes {
		nodes[i] = &natsNode{t: t, name: fmt.Sprintf("n%d", i+1), dir: filepath.Join(base, fmt.Sprintf("n%d", i+1)), bin: bin,
			client: fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)), clusterPort: freePort(t)}
	}
	for _, nd := range nodes {
		var routes []string
		for _, o := range nodes {
			if o != nd {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.clusterPort))
			}
		}
		nd.conf = filepath.Join(base, nd.name+".conf")
		conf := fmt.Sprintf(`server_name: %s
listen: %s
jetstream {
  store_dir: %q
  sync_interval: always
}
`, nd.name, strings.TrimPrefix(nd.client, "nats://"), nd.dir)
		if n > 1 { // a lone server runs JetStream unclustered
			conf += fmt.Sprintf("cluster {\n  name: microengine\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n",
				nd.clusterPort, strings.Join(routes, ", "))
		}
		if err := os.WriteFile(nd.conf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		nd.start()
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			nd.stop()
			if t.Failed() {
				t.Logf("%s log (tail):\n%s", nd.name, tail(nd.log.String(), 3000))
			}
		}
	})
	// Ready when JetStream answers: the meta leader is elected.
	waitJetStream(t, nodes, 60*time.Second)
	return nodes
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (nd *natsNode) start() {
	nd.log = &lockedBuffer{}
	nd.done = make(chan struct{})
	nd.cmd = exec.Command(nd.bin, "-c", nd.conf)
	nd.cmd.Stdout, nd.cmd.Stderr = nd.log, nd.log
	if err := nd.cmd.Start(); err != nil {
		nd.t.Fatal(err)
	}
	go func() { nd.cmd.Wait(); close(nd.done) }()
}

func (nd *natsNode) kill9() {
	nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.done
}

func (nd *natsNode) stop() {
	select {
	case <-nd.done:
		return
	default:
	}
	nd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-nd.done:
	case <-time.After(10 * time.Second):
		nd.kill9()
	}
}

func clusterURLs(nodes []*natsNode) []string {
	var urls []string
	for _, nd := range nodes {
		urls = append(urls, nd.client)
	}
	return urls
}

func waitJetStream(t testing.TB, nodes []*natsNode, within time.Duration) {
	t.Helper()
	nc, err := nats.Connect(strings.Join(clusterURLs(nodes), ","), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream not ready within %s: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// streamLeader names the node leading the stream that holds the bounty
// records, once it has one: a request lost under load, or a stream
// between leaders (none named), is asked again.
func streamLeader(t testing.TB, nodes []*natsNode, stream string) string {
	t.Helper()
	var leader string
	awaitStream(t, nodes, stream, 30*time.Second, func(c *jetstream.ClusterInfo) bool {
		leader = c.Leader
		return leader != ""
	}, "has no leader")
	return leader
}

// awaitStream asks the cluster for stream's info until ok holds of its
// cluster part, within; the test fails with stream, failure and the last
// error past it.
func awaitStream(t testing.TB, nodes []*natsNode, stream string, within time.Duration, ok func(*jetstream.ClusterInfo) bool, failure string) {
	t.Helper()
	nc, err := nats.Connect(strings.Join(clusterURLs(nodes), ","))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := js.Stream(ctx, stream)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = s.Info(ctx)
		}
		cancel()
		if err == nil && info.Cluster != nil && ok(info.Cluster) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s %s within %s (%v)", stream, failure, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// clusterEngineDir makes an engine folder (the eicar plugin only) whose
// bounties live in the cluster, three replicas each.
func clusterEngineDir(t testing.TB, urls []string) string {
	t.Helper()
	return eicarEngineDir(t, "info", fmt.Sprintf(`queue {
  servers  = [%s]
  replicas = 3
}
`, `"`+strings.Join(urls, `", "`)+`"`))
}

// TestClusterSurvivesLosingAMachine: 3 nats-server nodes and 3 engines
// sharing them (replicas 3); the simulator spreads bounties over the 3
// webhook listeners (a delivery that finds one dead goes to the next, as
// a load balancer would). Mid-run one engine and the node leading the
// bounty records' stream are killed with SIGKILL, and started again
// later. Every bounty is answered, in time, and no bounty gets two
// different answers; the restarted engine takes bounties again.
func TestClusterSurvivesLosingAMachine(t *testing.T) {
	runCluster(t, envInt("MICROENGINE_CLUSTER_RATE", clusterRate), envInt("MICROENGINE_CLUSTER_SECONDS", clusterSeconds))
}

// BenchmarkClusterLoad is the same at 200 bounties/s for 60 s.
func BenchmarkClusterLoad(b *testing.B) {
	for range b.N {
		runCluster(b, envInt("MICROENGINE_CLUSTER_RATE", 200), envInt("MICROENGINE_CLUSTER_SECONDS", 60))
	}
}

func runCluster(t testing.TB, rate, seconds int) {
	nodes := startCluster(t, 3)
	urls := clusterURLs(nodes)
	var engines []*engineProc
	for range 3 {
		engines = append(engines, startEngine(t, clusterEngineDir(t, urls)))
	}
	// Started beside a cluster that has just elected its meta leader, an
	// engine may find a server not yet joined, and JetStream refusing its
	// 3 replicas for a moment: it waits (and says so).
	placed := 0
	for _, e := range engines {
		if strings.Contains(e.logs(), "cannot place the replicas yet") {
			placed++
		}
	}
	t.Logf("%d of %d engines waited at start for JetStream to place their replicas", placed, len(engines))
	var webhooks []string
	for _, e := range engines {
		webhooks = append(webhooks, e.url+"/")
	}

	type result struct {
		sb  *simulator.Scoreboard
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		sb, err := simulator.Run(context.Background(), simulator.Options{
			URL: webhooks[0], URLs: webhooks[1:], Secret: secret,
			Count: rate * seconds, Rate: float64(rate),
			// Room for a claim held by the killed engine to lapse (10 s)
			// and a leader election (up to ~7 s measured).
			Expiry: 30 * time.Second, Concurrency: 256, Grace: 2 * time.Second,
		})
		done <- result{sb, err}
	}()

	// A third into the run: kill -9 one engine and the stream leader.
	at := func(frac float64) <-chan time.Time {
		return time.After(time.Until(start.Add(time.Duration(frac * float64(seconds) * float64(time.Second)))))
	}
	<-at(1.0 / 3)
	leaderName := streamLeader(t, nodes, "KV_microengine_bounties")
	var leader *natsNode
	for _, nd := range nodes {
		if nd.name == leaderName {
			leader = nd
		}
	}
	if leader == nil {
		t.Fatalf("stream leader %q is none of the nodes", leaderName)
	}
	t.Logf("at %s: kill -9 engine 2 and nats node %s (the stream leader)", time.Since(start).Round(time.Millisecond), leader.name)
	engines[1].kill9()
	leader.kill9()

	// Two thirds in: both come back, the engine once JetStream answers.
	// An engine opens its store after one JetStream request (account
	// info), which a cluster still without a leader leaves unanswered (a
	// node restarted under 10 s ago, or one that is not the leader, drops
	// it): the engine then waits out its minute to open the store. Under
	// load the election after the kill lasted until 12.6 s into the run,
	// and the engine restarted at 10.7 s had not listened 20 s later.
	<-at(2.0 / 3)
	t.Logf("at %s: restarting node %s", time.Since(start).Round(time.Millisecond), leader.name)
	leader.start()
	waitJetStream(t, nodes, 60*time.Second)
	t.Logf("at %s: JetStream answers; restarting engine 2", time.Since(start).Round(time.Millisecond))
	engines[1] = startEngine(t, engines[1].dir)

	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	// Peak resident set of an engine that ran the whole time, and of a
	// nats-server that was not killed.
	engineRSS := testproc.MemoryStatus(engines[0].cmd.Process.Pid, "VmHWM")
	var natsRSS int64
	for _, nd := range nodes {
		if nd != leader {
			natsRSS = max(natsRSS, testproc.MemoryStatus(nd.cmd.Process.Pid, "VmHWM"))
		}
	}
	sb := res.sb
	var out strings.Builder
	sb.WriteText(&out)
	t.Logf("%d bounties at %d/s over 3 engines: %d answered, p50 %.1f ms, p99 %.1f ms, %d duplicates (same answer), %d conflicting; peak RSS %d MiB per engine, %d MiB per nats-server\n%s",
		sb.Sent, rate, sb.Answered, sb.Latency.P50, sb.Latency.P99, sb.Duplicates, sb.Conflicting, engineRSS>>20, natsRSS>>20, out.String())
	if sb.Unsent != 0 || sb.Refused != 0 || sb.Missing != 0 || sb.Late != 0 || sb.Conflicting != 0 || sb.Wrong != 0 || sb.Invalid != 0 {
		t.Errorf("lost, late or conflicting answers:\n%s", out.String())
	}
	if b, ok := t.(*testing.B); ok {
		b.ReportMetric(float64(sb.Answered)/sb.Seconds, "bounties/s")
		b.ReportMetric(sb.Latency.P50, "p50-ms")
		b.ReportMetric(sb.Latency.P99, "p99-ms")
		b.ReportMetric(float64(sb.Duplicates), "duplicates")
		b.ReportMetric(float64(engineRSS)/(1<<20), "engine-peak-rss-MiB")
		b.ReportMetric(float64(natsRSS)/(1<<20), "nats-peak-rss-MiB")
	}

	// The restarted engine and node work: bounties sent to that engine
	// alone are answered, and the node is a current replica again.
	sb2, err := simulator.Run(context.Background(), simulator.Options{
		URL: engines[1].url + "/", Secret: secret, Count: 20, Rate: 20, Expiry: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sb2.OK() {
		var out strings.Builder
		sb2.WriteText(&out)
		t.Errorf("after the restart:\n%s", out.String())
	}
	waitReplicaCurrent(t, nodes, "KV_microengine_bounties", leader.name, 30*time.Second)
}

func waitReplicaCurrent(t testing.TB, nodes []*natsNode, stream, name string, within time.Duration) {
	t.Helper()
	awaitStream(t, nodes, stream, within, func(c *jetstream.ClusterInfo) bool {
		if c.Leader == name {
			return true
		}
		for _, r := range c.Replicas {
			if r.Name == name && r.Current && !r.Offline {
				return true
			}
		}
		return false
	}, "has not "+name+" as a current replica")
}

// startWorker starts `microengine run -role worker` in dir: no webhook
// listener; ready once it says it answers.
func startWorker(t testing.TB, dir string) *engineProc {
	t.Helper()
	e := spawnEngine(t, dir, "worker", "-role", "worker")
	e.waitReady("say it answers", func() bool { return strings.Contains(e.logs(), "worker: answering") })
	if _, err := os.Stat(filepath.Join(dir, "data", "listen.addr")); err == nil {
		t.Error("a worker wrote a listen address: it must not take webhooks")
	}
	return e
}

// TestRolesSplit: an engine run with -role webhook stores the bounties and
// scans none; one run with -role worker, with no webhook listener, answers
// them all through the shared cluster.
func TestRolesSplit(t *testing.T) {
	nodes := startCluster(t, 1)
	urls := clusterURLs(nodes)
	webhookDir, workerDir := clusterEngineDir(t, urls), clusterEngineDir(t, urls)
	for _, dir := range []string{webhookDir, workerDir} { // one server: one replica
		raw, _ := os.ReadFile(filepath.Join(dir, "engine.hcl"))
		os.WriteFile(filepath.Join(dir, "engine.hcl"), bytes.Replace(raw, []byte("replicas = 3"), []byte("replicas = 1"), 1), 0o644)
	}

	hook := startEngineRole(t, webhookDir, "webhook")
	worker := startWorker(t, workerDir)
	sb, err := simulator.Run(context.Background(), simulator.Options{
		URL: hook.url + "/", Secret: secret, Count: 40, Rate: 40, Expiry: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sb.OK() {
		var out strings.Builder
		sb.WriteText(&out)
		t.Errorf("split roles:\n%s", out.String())
	}
	if strings.Contains(hook.logs(), "answered:") {
		t.Error("the webhook engine answered a bounty itself")
	}
	// The worker logs an answer once the marketplace took it: the last
	// line may follow the simulator's end by a moment.
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(worker.logs(), "answered:") < 40 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(worker.logs(), "answered:"); n != 40 {
		t.Errorf("the worker answered %d bounties, want 40", n)
	}
}

// startEngineRole is startEngine with -role.
func startEngineRole(t testing.TB, dir, role string) *engineProc {
	t.Helper()
	return startEngineArgs(t, dir, "-role", role)
}
