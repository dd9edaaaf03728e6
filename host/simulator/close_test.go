package simulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/microengine/microengine/host/simulator"
)

// TestLastAnswerGetsItsReply: the simulator ends once every bounty is
// answered, and the answer that completes the count still gets its
// reply, not a connection closed under it: an engine would take that for
// a failed POST and post again (a worker's "answered" count short by
// one). An engine stand-in answers each bounty from its webhook and
// records what its POST got; many short runs give the close its chances.
func TestLastAnswerGetsItsReply(t *testing.T) {
	var mu sync.Mutex
	var posts sync.WaitGroup
	var failures []string
	client := &http.Client{Timeout: 10 * time.Second}
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var b struct {
			ResponseURL string `json:"response_url"`
		}
		if r.Header.Get("X-POLYSWARM-EVENT") != "bounty" || json.Unmarshal(raw, &b) != nil {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		posts.Add(1)
		go func() {
			defer posts.Done()
			answer := []byte(`{"verdict":"unknown","bid":0,"metadata":{"malware_family":"","scanner":{"version":"1.0"}}}`)
			resp, err := client.Post(b.ResponseURL, "application/json", bytes.NewReader(answer))
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if err != nil {
				mu.Lock()
				failures = append(failures, err.Error())
				mu.Unlock()
			}
		}()
	}))
	defer engine.Close()
	for i := range 30 {
		sb, err := simulator.Run(context.Background(), simulator.Options{
			URL: engine.URL + "/", Secret: "s", Count: 1, Rate: 100, Expiry: 10 * time.Second, StartID: int64(1000 + i),
		})
		if err != nil {
			t.Fatal(err)
		}
		if sb.Answered != 1 {
			t.Fatalf("run %d: %d answered", i, sb.Answered)
		}
	}
	posts.Wait() // each POST ends with its reply, an error, or the client's timeout
	if len(failures) > 0 {
		t.Errorf("%d answers were cut off by the simulator's end: %s", len(failures), fmt.Sprint(failures))
	}
}
