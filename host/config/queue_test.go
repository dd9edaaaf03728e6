package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestBrokenQueue(t *testing.T) {
	for file, want := range map[string][]string{
		"queue.hcl": {
			`2:14: queue.servers: invalid server URL "http://10.0.0.2:4222"`,
			`2:14: queue.servers: invalid server URL "10.0.0.3"`,
			"3:14: queue.replicas: at most 5",
			"4:14: queue.sync: applies to the embedded node only",
			"5:14: queue.tls_key: tls_key needs tls_cert",
			"7:1: duplicate queue block",
		},
		"queue2.hcl": {
			"2:17: queue.replicas: the embedded node holds one replica",
			`3:17: queue.sync: want "always" or a positive duration, not "sometimes"`,
			"4:17: queue.credentials: not the content of a .creds file",
		},
	} {
		_, diags := Load(filepath.Join("testdata", "broken", file))
		wantDiags(t, diags, want)
	}
}

func TestQueueBlock(t *testing.T) {
	dir := t.TempDir()
	creds := "-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n"
	os.WriteFile(filepath.Join(dir, "engine.creds"), []byte(creds), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("ca"), 0o600)
	for name, tt := range map[string]struct {
		src   string
		check func(q *Queue) bool
	}{
		"absent": {``, func(q *Queue) bool { return q == nil }},
		"embedded default": {`queue {}`, func(q *Queue) bool {
			return q.Embedded() && q.Replicas == 1 && q.SyncAlways && q.SyncInterval == 0
		}},
		"embedded, sync interval": {`queue { sync = "1s" }`, func(q *Queue) bool {
			return !q.SyncAlways && q.SyncInterval == time.Second
		}},
		"cluster": {`queue {
  servers     = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "tls://10.0.0.3:4222"]
  replicas    = 3
  credentials = file("engine.creds")
  tls_ca      = "ca.pem"
}`, func(q *Queue) bool {
			return !q.Embedded() && len(q.Servers) == 3 && q.Replicas == 3 && q.Credentials == creds &&
				q.TLSCA == filepath.Join(dir, "ca.pem")
		}},
	} {
		path := filepath.Join(dir, "engine.hcl")
		os.WriteFile(path, []byte(tt.src), 0o600)
		cfg, diags := Load(path)
		if diags.HasErrors() {
			t.Errorf("%s: %s", name, diags.Error())
			continue
		}
		if !tt.check(cfg.Queue) {
			t.Errorf("%s: decoded %+v", name, cfg.Queue)
		}
	}
}
