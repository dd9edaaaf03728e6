package marketplace

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/answerschema"
)

// TestPolySwarmPayloads sends bounties written as PolySwarm's two code
// generations write them (polyswarm_engine, microengine-webhooks-py and
// their fixtures), signed, to the paths they use. Each must be accepted,
// never refused, and answered before its expiration with an answer the
// protocol's schema accepts (the fake marketplace checks every answer).
func TestPolySwarmPayloads(t *testing.T) {
	e := newTestEngine(t, eicarScanner())
	m := e.market
	eicar := m.put("eicar", []byte("X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR"))
	clean := m.put("clean", []byte("hello"))
	urlList := m.put("urllist", []byte("http://EICAR.example/landing\r\n"))
	soon := func() string { return time.Now().Add(30 * time.Second).UTC().Format("2006-01-02T15:04:05.000000") }
	respond := func(id string) string { return m.srv.URL + "/respond/" + id }

	for _, tc := range []struct {
		name    string
		path    string
		body    map[string]any
		verdict string
		vote    bool
	}{
		{"polyswarm_engine: uuid id, queue path, metadata sha256 and mimetype", "/engine-queue", map[string]any{
			"id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "artifact_type": "FILE", "artifact_uri": eicar,
			"expiration": soon(), "response_url": respond("p1"), "phase": "assertion_window",
			"metadata": map[string]any{"sha256": "asdf", "mimetype": "text/plain"},
			"rules":    map[string]any{"min_allowed_bid": 6.25e+16, "max_allowed_bid": 1e+18},
		}, "malicious", false},
		{"polyswarm_engine: no expiration, data: URI", "/microengine", map[string]any{
			"id": "p2", "artifact_type": "file", "artifact_uri": "data:text/plain;base64," + base64.StdEncoding.EncodeToString([]byte("EICAR")),
			"response_url": respond("p2"), "phase": "assertion",
		}, "malicious", false},
		{"arbitration_window is a vote", "/", map[string]any{
			"id": 3, "artifact_type": "file", "artifact_uri": clean, "expiration": soon(),
			"response_url": respond("p3"), "phase": "arbitration_window",
		}, "benign", true},
		{"unknown phase, votes URL", "/", map[string]any{
			"id": 4, "artifact_type": "file", "artifact_uri": clean, "expiration": soon(),
			"response_url": respond("votes"), "phase": "settle_window",
		}, "benign", true},
		{"wei as strings, min over max", "/", map[string]any{
			"id": "5", "artifact_type": "file", "artifact_uri": clean, "expiration": soon(),
			"response_url": respond("p5"), "rules": map[string]any{"min_allowed_bid": "2000000000000000000", "max_allowed_bid": "1e18"},
		}, "benign", false},
		{"url bounty: the link leads to the URL", "/webhook/bounty", map[string]any{
			"id": 6, "artifact_type": "URL", "artifact_uri": urlList, "expiration": soon(),
			"response_url": respond("p6"), "phase": "assertion", "mimetype": "text/uri-list",
		}, "malicious", false},
		{"unsupported type", "/", map[string]any{
			"id": 7, "artifact_type": "apk", "artifact_uri": clean, "expiration": soon(), "response_url": respond("p7"),
		}, "unknown", false},
		{"artifact cannot be fetched", "/", map[string]any{
			"id": 8, "artifact_type": "file", "artifact_uri": m.srv.URL + "/artifacts/missing", "expiration": soon(), "response_url": respond("p8"),
		}, "unknown", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := json.Marshal(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if code, reply := e.sendTo(t, tc.path, "bounty", raw); code != http.StatusAccepted {
				t.Fatalf("HTTP %d %s", code, reply)
			}
			a := m.wait(5 * time.Second)
			_, hasBid := a.Body["bid"]
			if str(a.Body["verdict"]) != tc.verdict || hasBid == tc.vote {
				t.Errorf("answer %s; want %s, vote %v", a.Raw, tc.verdict, tc.vote)
			}
			kind := answerschema.Assertion
			if tc.vote {
				kind = answerschema.Vote
			}
			if err := answerschema.Check(a.Raw, kind); err != nil {
				t.Error(err)
			}
			if tc.name == "wei as strings, min over max" && string(a.Body["bid"]) != "1000000000000000000" {
				t.Errorf("bid %s, want the maximum: min above max is clamped to it", a.Body["bid"])
			}
			if exp, ok := tc.body["expiration"].(string); ok {
				if want, _ := ParseTimestamp(exp); !a.At.Before(want) {
					t.Errorf("answered at %s, after the expiration %s", a.At, want)
				}
			}
		})
	}
}

// TestWebhooksOnAnyPath: pings and bounties are taken on any path, as
// sent (a path a mux would clean, such as //queue, is answered, never
// redirected); GET keeps its own routes.
func TestWebhooksOnAnyPath(t *testing.T) {
	e := newTestEngine(t, eicarScanner())
	for _, path := range []string{"/", "/engine-queue", "/a/b/c", "//engine", "/x/../engine", "/engine/.", "/engine/", "/q?token=1"} {
		if code, reply := e.sendTo(t, path, "ping", nil); code != http.StatusOK || !strings.Contains(reply, `"OK"`) {
			t.Errorf("ping on %s: HTTP %d %s", path, code, reply)
		}
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader([]byte("{}")))
		req.Header.Set(HeaderEvent, "bounty")
		req.Header.Set(HeaderSignature, strings.Repeat("00", 32))
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a wrongly signed bounty on %s: HTTP %d, want 401", path, resp.StatusCode)
		}
	}
	resp, err := http.Get(e.srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz: %d", resp.StatusCode)
	}
}

// noRedirects shows a redirect as it is: a webhook answered with one was
// not taken.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// sendTo posts a signed webhook to path.
func (e *testEngine) sendTo(t *testing.T, path, event string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader(body))
	req.Header.Set(HeaderEvent, event)
	req.Header.Set(HeaderSignature, Sign(testSecret, body))
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(raw))
}
