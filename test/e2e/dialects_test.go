//go:build e2e

package e2e

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/internal/samples"
)

// TestPolySwarmDialects replays bounties as PolySwarm's own code writes
// them (polyswarm_engine, microengine-webhooks-py and their fixtures)
// against the real `microengine run` with both plugins: every one is
// accepted (a refusal counts against the engine), answered before its
// expiration, and the answer passes the protocol's schema (the harness
// checks every answer it receives).
func TestPolySwarmDialects(t *testing.T) {
	clamd := devclamd.StartT(t, devclamd.Options{})
	mk := newMarketplace(t)
	eng := startEngine(t, engineDir(t, clamd, ""))

	var enc bytes.Buffer
	zw := zip.NewWriter(&enc)
	// Flag bit 0: traditional PKWARE encryption; the test clamd alerts.
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "secret.txt", Method: zip.Store, Flags: 0x1})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("hidden "), 600))
	zw.Close()

	eicar := mk.put("dialect-eicar", samples.EICAR())
	clean := mk.put("dialect-clean", []byte("a clean file\n"))
	urlList := mk.put("dialect-url", []byte("http://example.invalid/landing\r\n"))
	encrypted := mk.put("dialect-encrypted", enc.Bytes())
	soon := func() string { return time.Now().Add(20 * time.Second).UTC().Format("2006-01-02T15:04:05.000000") }
	answerURL := func(key string) string { return mk.srv.URL + "/answer/" + key }

	for _, tc := range []struct {
		name, path, key string
		body            map[string]any
		verdict         string
		vote            bool
		comment         string
	}{
		{"uuid id, queue path, sha256 under metadata, exponent wei", "/engine-queue", "d1", map[string]any{
			"id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "artifact_type": "FILE", "artifact_uri": eicar,
			"expiration": soon(), "phase": "assertion_window",
			"metadata": map[string]any{"sha256": "asdf", "mimetype": "text/plain"},
			"rules":    map[string]any{"min_allowed_bid": 6.25e+16, "max_allowed_bid": 1e+18},
		}, "malicious", false, `sha256 "asdf" is not 64 hex digits: the download was not verified`},
		{"data: URI, no expiration", "/microengine", "d2", map[string]any{
			"id": "d2", "artifact_type": "file", "phase": "assertion",
			"artifact_uri": "data:application/octet-stream;base64," + base64.StdEncoding.EncodeToString(samples.EICAR()),
		}, "malicious", false, ""},
		{"microengine-webhooks-py's integration fixture: guid, artifact_url, empty expiration, rules []", "/", "d9", map[string]any{
			"guid": "a7e8818a-95fc-4487-ad9a-522f6cd88cb2", "artifact_type": "file", "artifact_url": eicar,
			"sha256": sha256Hex(samples.EICAR()), "mimetype": "text/plain", "expiration": "", "phase": "assertion", "rules": []any{},
		}, "malicious", false, ""},
		{"polyswarm_engine's fixture: data: URI with its sha256, no phase, no expiration", "/", "d10", map[string]any{
			"id": 2099741177, "artifact_type": "file", "sha256": sha256Hex(samples.EICAR()), "mimetype": "text/plain",
			"artifact_uri": "data:text/plain;base64," + base64.StdEncoding.EncodeToString(samples.EICAR()),
		}, "malicious", false, ""},
		{"arbitration_window is a vote", "/", "d3", map[string]any{
			"id": 3_000_003, "artifact_type": "file", "artifact_uri": clean, "expiration": soon(), "phase": "arbitration_window",
		}, "benign", true, ""},
		{"unknown phase to a votes URL is a vote", "/", "votes", map[string]any{
			"id": 3_000_004, "artifact_type": "file", "artifact_uri": clean, "expiration": soon(), "phase": "settle",
		}, "benign", true, `unknown phase "settle": answered as arbitration`},
		{"wei as strings, min over max", "/", "d5", map[string]any{
			"id": "3000005", "artifact_type": "file", "artifact_uri": clean, "expiration": soon(),
			"rules": map[string]any{"min_allowed_bid": "2000000000000000000", "max_allowed_bid": "1e18"},
		}, "benign", false, "rules: min_allowed_bid 2000000000000000000 exceeds max_allowed_bid 1000000000000000000: bids are clamped to the maximum"},
		{"url bounty: no plugin judges URLs", "/", "d6", map[string]any{
			"id": 3_000_006, "artifact_type": "url", "artifact_uri": urlList, "expiration": soon(),
		}, "unknown", false, "SKIPPED:TYPE-UNSUPPORTED"},
		{"artifact cannot be fetched", "/", "d7", map[string]any{
			"id": 3_000_007, "artifact_type": "file", "artifact_uri": mk.srv.URL + "/artifact/missing", "expiration": soon(),
		}, "unknown", false, "SKIPPED:CANNOT-FETCH"},
		{"encrypted archive", "/", "d8", map[string]any{
			"id": 3_000_008, "artifact_type": "file", "artifact_uri": encrypted, "expiration": soon(),
		}, "unknown", false, "SKIPPED:ENCRYPTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.body["response_url"] = answerURL(tc.key)
			raw, err := json.Marshal(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if code, reply := postTo(t, eng.url+tc.path, raw); code != http.StatusAccepted {
				t.Fatalf("HTTP %d %s", code, reply)
			}
			a := mk.waitAnswer(tc.key, 15*time.Second)
			if a.Verdict != tc.verdict || a.HasBid == tc.vote {
				t.Errorf("answer %s (bid %v %s); want %s, vote %v", a.Verdict, a.HasBid, a.RawBid, tc.verdict, tc.vote)
			}
			var md struct {
				Comments []string `json:"comments"`
			}
			json.Unmarshal(a.Metadata, &md)
			if tc.comment != "" && !slices.Contains(md.Comments, tc.comment) {
				t.Errorf("comments %q, want %q among them", md.Comments, tc.comment)
			}
			if tc.key == "d5" && a.RawBid != "1000000000000000000" {
				t.Errorf("bid %s, want the maximum (min above max is clamped to it)", a.RawBid)
			}
			if exp, ok := tc.body["expiration"].(string); ok && exp != "" {
				if at, _ := time.Parse("2006-01-02T15:04:05.000000", exp); !a.At.Before(at) {
					t.Errorf("answered at %s, after the expiration %s", a.At, at)
				}
			}
		})
	}
}

// postTo sends a signed bounty webhook to url, as polyswarm_engine routes
// them: to a path of its choosing.
func postTo(t *testing.T, url string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-POLYSWARM-EVENT", "bounty")
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req.Header.Set("X-POLYSWARM-SIGNATURE", hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(reply)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
