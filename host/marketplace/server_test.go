package marketplace

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/host/config"
)

func TestWebhookProtocol(t *testing.T) {
	e := newTestEngine(t, eicarScanner(), func(c *config.Marketplace, _ *Options) {
		c.MaxBodySize = 4096
		c.WebhookSecrets = []string{"new-secret", testSecret} // rotation: either verifies
	})
	uri := e.market.put("clean", []byte("hello"))
	body := e.market.bountyJSON(1, uri, time.Minute, nil)

	for _, tc := range []struct {
		name   string
		event  string
		body   []byte
		hdr    map[string]string
		code   int
		reason string
	}{
		{"ping", "ping", nil, nil, 200, `{"status":"OK"}`},
		{"ping any case", "PING", nil, nil, 200, `{"status":"OK"}`},
		{"missing signature", "bounty", body, map[string]string{HeaderSignature: ""}, 400, "missing X-POLYSWARM-SIGNATURE"},
		{"wrong signature", "bounty", body, map[string]string{HeaderSignature: Sign("other", body)}, 401, "signature does not match"},
		{"garbage signature", "bounty", body, map[string]string{HeaderSignature: "zz"}, 401, "signature does not match"},
		{"unknown event", "assertion", body, nil, 400, "unsupported event"},
		{"missing event", "", body, nil, 400, "missing X-POLYSWARM-EVENT"},
		{"malformed JSON", "bounty", []byte(`{"id": 1,`), nil, 400, `"status":"ERROR","reason":"body is not valid JSON`},
		{"invalid field", "bounty", []byte(`{"id": 1.5}`), nil, 400, "id: want an integer or a string"},
		{"too big", "bounty", bytes.Repeat([]byte(" "), 5000), nil, 413, "over the size limit"},
		{"bounty", "bounty", body, nil, 202, `{"status":"ACCEPTED"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, reply := e.send(t, tc.event, tc.body, tc.hdr)
			if code != tc.code || !strings.Contains(reply, tc.reason) {
				t.Errorf("HTTP %d %s; want %d containing %q", code, reply, tc.code, tc.reason)
			}
		})
	}
	if a := e.market.wait(5 * time.Second); a.ID != "1" {
		t.Errorf("answer for %s", a.ID)
	}

	// The other secret of the rotation verifies too.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/", nil)
	req.Header.Set(HeaderEvent, "ping")
	req.Header.Set(HeaderSignature, Sign("new-secret", nil))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("ping signed with the new secret: %v %v", resp, err)
	}
}

func TestLivenessHealthMetrics(t *testing.T) {
	healthy := true
	e := newTestEngine(t, eicarScanner(), func(_ *config.Marketplace, o *Options) {
		o.Healthy = func() bool { return healthy }
	})
	get := func(path string) (int, string) {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	if code, _ := get("/"); code != 200 {
		t.Errorf("GET / = %d", code)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("healthz = %d", code)
	}
	healthy = false
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "UNHEALTHY") {
		t.Errorf("unhealthy healthz = %d %s", code, body)
	}

	e.accept(t, e.market.bountyJSON(7, e.market.put("e", []byte("EICAR")), time.Minute, nil))
	e.market.wait(5 * time.Second)
	e.record(t, 7, PhaseAssertion)
	waitCounter(t, e.reg, "microengine_bounties_answered_total", nil, 1)
	// /metrics is not served on the webhook port: its own listener has it.
	if code, _ := get("/metrics"); code == 200 {
		t.Errorf("GET /metrics on the webhook port = %d", code)
	}
	msrv := httptest.NewServer(e.svc.MetricsHandler())
	defer msrv.Close()
	resp, err := http.Get(msrv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(raw)
	for _, want := range []string{
		`microengine_bounties_received_total{phase="assertion"} 1`,
		`microengine_bounties_answered_total{phase="assertion",verdict="malicious"} 1`,
		`microengine_webhooks_total{code="202",event="bounty"} 1`,
		`microengine_bounty_scan_seconds_count{verdict="malicious"} 1`,
		`microengine_artifact_fetch_seconds_count{outcome="ok"} 1`,
		`microengine_bounty_answer_seconds_count 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
