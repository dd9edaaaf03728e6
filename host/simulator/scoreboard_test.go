package simulator_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/microengine/microengine/host/simulator"
	"github.com/microengine/microengine/shared"
)

// scriptedEngine speaks the webhook protocol without the engine's code: it
// accepts every bounty and, once all n have arrived, answers each with the
// verdict its sample expects, then again with again(expected) (no repeat
// when that is ""). Every repeat goes before the last bounty's first
// answer, so the simulator has seen them all when it stops. done, if set,
// runs after the last answer.
func scriptedEngine(t *testing.T, n int, again func(shared.Verdict) shared.Verdict, done func()) string {
	t.Helper()
	expected := map[string]shared.Verdict{}
	for _, s := range simulator.DefaultSamples() {
		expected[fmt.Sprintf("%x", sha256Sum(s.Content))] = s.Expected
	}
	type todo struct {
		url     string
		verdict shared.Verdict
	}
	var mu sync.Mutex
	var got []todo
	var answering sync.WaitGroup
	post := func(url string, v shared.Verdict) {
		bid, family, confidence := "62500000000000000", "", "1"
		switch v {
		case shared.VerdictUnknown, shared.VerdictSuspicious:
			bid, confidence = "0", "0"
		case shared.VerdictMalicious:
			family = "EICAR"
		}
		body := fmt.Sprintf(`{"verdict": %q, "bid": %s, "metadata": {"malware_family": %q, "product": "fake", "heuristic": false, "confidence": %s,
			"scanner": {"version": "1", "vendor_version": "", "signatures_version": "", "environment": {"operating_system": "linux", "architecture": "amd64"}}}}`, v, bid, family, confidence)
		resp, err := http.Post(url, "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			return // the simulator stopped listening: it scores what it got
		}
		resp.Body.Close()
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			ResponseURL string `json:"response_url"`
			SHA256      string `json:"sha256"`
		}
		raw, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(raw, &b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, todo{b.ResponseURL, expected[b.SHA256]})
		i, all := len(got), append([]todo(nil), got...)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"status":"ACCEPTED"}`)
		if i != n {
			return
		}
		answering.Add(1)
		go func() {
			defer answering.Done()
			for j, a := range all {
				if j == len(all)-1 {
					break
				}
				post(a.url, a.verdict)
				if v := again(a.verdict); v != "" {
					post(a.url, v)
				}
			}
			post(all[len(all)-1].url, all[len(all)-1].verdict)
			if done != nil {
				done()
			}
		}()
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(answering.Wait) // first: no answer outlives the test
	return srv.URL + "/"
}

func TestScoreboardCountsRepeatedAnswersAsFaults(t *testing.T) {
	const n = 8
	for _, tc := range []struct {
		name                    string
		again                   func(shared.Verdict) shared.Verdict
		duplicates, conflicting int
	}{
		{"answered once", func(shared.Verdict) shared.Verdict { return "" }, 0, 0},
		{"the same answer twice", func(v shared.Verdict) shared.Verdict { return v }, n - 1, 0},
		{"a conflicting second answer", func(shared.Verdict) shared.Verdict { return shared.VerdictUnknown }, n - 1, n - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := scriptedEngine(t, n, tc.again, nil)
			sb, err := simulator.Run(context.Background(), simulator.Options{URL: url, Secret: "s", Count: n, Rate: 1000, Expiry: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if sb.Correct != n || sb.Duplicates != tc.duplicates || sb.Conflicting != tc.conflicting {
				t.Errorf("correct %d, duplicates %d, conflicting %d; want %d, %d, %d", sb.Correct, sb.Duplicates, sb.Conflicting, n, tc.duplicates, tc.conflicting)
			}
			if want := tc.duplicates == 0; sb.OK() != want {
				var out bytes.Buffer
				sb.WriteText(&out)
				t.Errorf("OK() = %v, want %v\n%s", sb.OK(), want, out.String())
			}
		})
	}
}

// A run cancelled before it sent every bounty is not OK, even when every
// bounty it did send was answered right.
func TestScoreboardCountsUnsentBounties(t *testing.T) {
	const n = 20
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The first three are answered right, then the run is cancelled; the
	// rest leave 200 ms apart, so at least the last, 3.8 s in, is never
	// sent: the answers and the cancel have 3.4 s after the third left
	// (with 6 bounties they had 600 ms, a window a loaded machine could
	// miss). The run ends at the cancel, not at the last bounty.
	url := scriptedEngine(t, 3, func(shared.Verdict) shared.Verdict { return "" }, cancel)
	sb, err := simulator.Run(ctx, simulator.Options{URL: url, Secret: "s", Count: n, Rate: 5, Expiry: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if sb.OK() || sb.Unsent == 0 || sb.Sent+sb.Unsent != n {
		t.Errorf("OK() %v, sent %d (%d correct), unsent %d; want not OK with %d planned", sb.OK(), sb.Sent, sb.Correct, sb.Unsent, n)
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
