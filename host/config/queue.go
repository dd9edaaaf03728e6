package config

import (
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Queue is the optional queue block: where the bounty lifecycle is kept.
// Without servers the engine runs its own JetStream node in-process (file
// storage under data_dir, no listener); with servers it joins that
// cluster, and every engine pointed at it shares the bounties.
type Queue struct {
	// Servers are the NATS URLs of the cluster (nats:// or tls://). Empty:
	// the embedded node.
	Servers []string
	// Replicas is how many servers hold each bounty (1..5). Default 1; a
	// cluster that must survive the loss of a machine wants 3.
	Replicas int
	// Credentials is the content of a NATS .creds file (JWT and seed),
	// usually file("engine.creds"). Empty: none.
	Credentials string
	// TLSCA, TLSCert, TLSKey are file paths: the CA the servers'
	// certificates are checked against, and a client certificate for
	// servers that require one.
	TLSCA, TLSCert, TLSKey string
	// SyncAlways makes the embedded node fsync every write before it is
	// acknowledged (the default). False with SyncInterval: writes are
	// flushed every SyncInterval, and a power loss can drop the writes
	// of that interval that were already acknowledged. Servers configure
	// their own sync (sync_interval in nats-server.conf).
	SyncAlways   bool
	SyncInterval time.Duration

	DefRange hcl.Range
}

// Embedded reports whether the engine runs its own JetStream node.
func (q *Queue) Embedded() bool { return len(q.Servers) == 0 }

// DefaultQueue is the queue block's defaults: the embedded node, fsync on
// every write.
func DefaultQueue() Queue { return Queue{Replicas: 1, SyncAlways: true} }

var queueSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "servers"},
		{Name: "replicas"},
		{Name: "credentials"},
		{Name: "tls_ca"},
		{Name: "tls_cert"},
		{Name: "tls_key"},
		{Name: "sync"},
	},
}

// maxReplicas is JetStream's own limit on a stream's replicas.
const maxReplicas = 5

func (d *decoder) decodeQueue(b *hcl.Block) *Queue {
	q := new(Queue)
	*q = DefaultQueue()
	q.DefRange = b.DefRange
	content, diags := b.Body.Content(queueSchema)
	d.structural(diags, "queue")
	a := content.Attributes

	if l, st := d.stringList(a["servers"], "queue.servers"); st == valid {
		for _, s := range l {
			u, err := url.Parse(s)
			if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls") {
				d.errorf(a["servers"].Expr.Range(), "queue.servers: invalid server URL "+quote(s),
					`Give each server as nats://host:port (or tls://host:port), such as "nats://10.0.0.1:4222".`)
				continue
			}
			q.Servers = append(q.Servers, s)
		}
	}
	if n, st := d.integer(a["replicas"], "queue.replicas", 1); st == valid {
		switch {
		case n > maxReplicas:
			d.errorf(a["replicas"].Expr.Range(), "queue.replicas: at most 5", "JetStream keeps at most 5 replicas of a stream.")
		case len(q.Servers) == 0 && n > 1:
			d.errorf(a["replicas"].Expr.Range(), "queue.replicas: the embedded node holds one replica",
				"Replicas need a cluster: list its servers, or remove replicas.")
		case len(q.Servers) > 0 && n > len(q.Servers):
			d.errorf(a["replicas"].Expr.Range(), "queue.replicas: more replicas than servers listed",
				"Each replica lives on its own server: list at least as many servers as replicas.")
		default:
			q.Replicas = n
		}
	}
	if s, st := d.str(a["credentials"], "queue.credentials"); st == valid {
		if !strings.Contains(s, "-----BEGIN") {
			d.errorf(a["credentials"].Expr.Range(), "queue.credentials: not the content of a .creds file",
				`Give the file's content, such as credentials = file("engine.creds").`)
		} else {
			q.Credentials = s
		}
	}
	if s, st := d.str(a["tls_ca"], "queue.tls_ca"); st == valid && d.readable(a["tls_ca"], "queue.tls_ca", s) {
		q.TLSCA = d.abs(s)
	}
	cert, certSt := d.str(a["tls_cert"], "queue.tls_cert")
	key, keySt := d.str(a["tls_key"], "queue.tls_key")
	switch {
	case certSt == valid && keySt == absent:
		d.errorf(a["tls_cert"].Expr.Range(), "queue.tls_cert: tls_cert needs tls_key", "")
	case keySt == valid && certSt == absent:
		d.errorf(a["tls_key"].Expr.Range(), "queue.tls_key: tls_key needs tls_cert", "")
	case certSt == valid && keySt == valid:
		if d.readable(a["tls_cert"], "queue.tls_cert", cert) && d.readable(a["tls_key"], "queue.tls_key", key) {
			q.TLSCert, q.TLSKey = d.abs(cert), d.abs(key)
		}
	}
	if (q.TLSCA != "" || q.TLSCert != "" || q.Credentials != "") && len(q.Servers) == 0 {
		d.errorf(b.DefRange, "queue: credentials and TLS settings need servers", "The embedded node has no listener: they apply to a cluster's servers only.")
	}
	if s, st := d.str(a["sync"], "queue.sync"); st == valid {
		switch {
		case len(q.Servers) > 0:
			d.errorf(a["sync"].Expr.Range(), "queue.sync: applies to the embedded node only",
				"A cluster's servers set their own sync_interval in nats-server.conf.")
		case s == "always":
			q.SyncAlways = true
		default:
			v, err := time.ParseDuration(s)
			if err != nil || v <= 0 {
				d.errorf(a["sync"].Expr.Range(), "queue.sync: want \"always\" or a positive duration, not "+quote(s), "")
			} else {
				q.SyncAlways, q.SyncInterval = false, v
			}
		}
	}
	return q
}

func quote(s string) string { return `"` + s + `"` }
