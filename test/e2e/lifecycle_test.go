//go:build e2e

package e2e

import (
	"encoding/json"
	"math/big"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/internal/samples"
)

const clamavVersionFlag = "github.com/microengine/microengine/plugins/clamav/scanner.Version"

type metadata struct {
	MalwareFamily *string `json:"malware_family"`
	Product       string  `json:"product"`
	Heuristic     *bool   `json:"heuristic"`
	Scanner       struct {
		Version           string `json:"version"`
		VendorVersion     string `json:"vendor_version"`
		SignaturesVersion string `json:"signatures_version"`
		Environment       struct {
			OperatingSystem string `json:"operating_system"`
			Architecture    string `json:"architecture"`
		} `json:"environment"`
	} `json:"scanner"`
}

// checkAssertion checks an assertion's shape: verdict, an integer bid
// within the rules (0 for unknown and suspicious), and the metadata schema.
func checkAssertion(t *testing.T, a answer, wantVerdict string) metadata {
	t.Helper()
	if a.Verdict != wantVerdict {
		t.Fatalf("verdict %q, want %q (metadata %s)", a.Verdict, wantVerdict, a.Metadata)
	}
	if !a.HasBid || strings.ContainsAny(a.RawBid, ".eE\"") {
		t.Fatalf("bid %q is not a JSON integer", a.RawBid)
	}
	bid, ok := new(big.Int).SetString(a.RawBid, 10)
	if !ok {
		t.Fatalf("bid %q", a.RawBid)
	}
	lo, hi := big.NewInt(62_500_000_000_000_000), new(big.Int).SetUint64(1_000_000_000_000_000_000)
	switch wantVerdict {
	case "unknown", "suspicious":
		if bid.Sign() != 0 {
			t.Errorf("%s answered with bid %s, want 0", wantVerdict, bid)
		}
	default:
		if bid.Cmp(lo) < 0 || bid.Cmp(hi) > 0 {
			t.Errorf("bid %s outside [%s, %s]", bid, lo, hi)
		}
	}
	var md metadata
	if err := json.Unmarshal(a.Metadata, &md); err != nil {
		t.Fatalf("metadata %s: %v", a.Metadata, err)
	}
	if md.MalwareFamily == nil || md.Heuristic == nil || md.Scanner.Version == "" ||
		md.Scanner.Environment.OperatingSystem == "" || md.Scanner.Environment.Architecture == "" {
		t.Errorf("metadata misses required fields: %s", a.Metadata)
	}
	return md
}

func TestBountyLifecycle(t *testing.T) {
	clamd := devclamd.StartT(t, devclamd.Options{})
	mk := newMarketplace(t)
	eng := startEngine(t, engineDir(t, clamd, ""))
	zipped, err := samples.Zip("inner.txt", samples.Marker("ZIPPED"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("verdicts with bids and metadata", func(t *testing.T) {
		for _, tc := range []struct {
			name, verdict, family string
			content               []byte
		}{
			{"eicar", "malicious", "EICAR-Test-File", samples.EICAR()},
			{"marker", "malicious", "MicroEngine.Test.Marker.Alpha.UNOFFICIAL", samples.Marker("ALPHA")},
			{"zipped marker", "malicious", "MicroEngine.Test.Marker.Zipped.UNOFFICIAL", zipped},
			{"clean", "benign", "", []byte("a clean file\n")},
		} {
			b, key := mk.newBounty(tc.content, 15*time.Second)
			eng.sendBounty(b)
			md := checkAssertion(t, mk.waitAnswer(key, 10*time.Second), tc.verdict)
			if *md.MalwareFamily != tc.family {
				t.Errorf("%s: family %q, want %q", tc.name, *md.MalwareFamily, tc.family)
			}
			// Where both plugins gave the verdict both are named; where
			// clamd alone found it, vendor_version is clamd's own.
			vv := md.Scanner.VendorVersion
			switch tc.name {
			case "eicar", "clean":
				if !strings.Contains(vv, "clamav:1.") || !strings.Contains(vv, "eicar:1.0.0") {
					t.Errorf("%s: scanner.vendor_version %q does not name both plugins' backends", tc.name, vv)
				}
			default:
				if !regexp.MustCompile(`^1\.[0-9]+\.[0-9]+$`).MatchString(vv) {
					t.Errorf("%s: scanner.vendor_version %q is not clamd's own version", tc.name, vv)
				}
			}
		}
	})

	t.Run("ping and liveness", func(t *testing.T) {
		if code, body := eng.post("ping", "p1", nil, ""); code/100 != 2 || !strings.Contains(body, `"OK"`) {
			t.Fatalf("ping: %d %s", code, body)
		}
		resp, err := http.Get(eng.url + "/")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /: %v %v", resp, err)
		}
		resp.Body.Close()
	})

	t.Run("bad webhooks", func(t *testing.T) {
		b, _ := mk.newBounty([]byte("x"), 10*time.Second)
		body, _ := json.Marshal(b)
		for _, tc := range []struct {
			name, event, sig string
			body             []byte
			want             int
		}{
			{"missing signature", "bounty", "-", body, http.StatusBadRequest},
			{"wrong signature", "bounty", strings.Repeat("ab", 32), body, http.StatusUnauthorized},
			{"malformed JSON", "bounty", "", []byte(`{"id": 1, "artifact_type": `), http.StatusBadRequest},
			{"unknown event", "assertion", "", body, http.StatusBadRequest},
		} {
			if code, resp := eng.post(tc.event, "bad-"+tc.name, tc.body, tc.sig); code != tc.want || len(resp) == 0 {
				t.Errorf("%s: %d %q, want %d with a reason", tc.name, code, resp, tc.want)
			}
		}
		time.Sleep(300 * time.Millisecond)
		if as := mk.answersFor(keyOf(b)); len(as) != 0 {
			t.Errorf("a refused webhook was answered: %+v", as)
		}
	})

	t.Run("faults answer unknown with bid 0", func(t *testing.T) {
		notFound, k404 := mk.newBounty([]byte("x"), 15*time.Second)
		notFound.ArtifactURI = mk.srv.URL + "/artifact/does-not-exist"
		slow, kSlow := mk.newBounty([]byte("clean"), 15*time.Second)
		slow.ArtifactURI = mk.srv.URL + "/hold/" + kSlow // never released: fetch_timeout is 2s
		mismatch, kMis := mk.newBounty([]byte("clean bytes"), 15*time.Second)
		mismatch.SHA256 = strings.Repeat("0", 64)
		for _, b := range []bounty{notFound, slow, mismatch} {
			eng.sendBounty(b)
		}
		for _, k := range []string{k404, kSlow, kMis} {
			checkAssertion(t, mk.waitAnswer(k, 10*time.Second), "unknown")
		}
	})

	t.Run("expired bounty is not answered", func(t *testing.T) {
		expired := func() float64 {
			m := eng.metric("microengine_bounties_expired_total")
			f := strings.Fields(m)
			if len(f) != 2 {
				t.Fatalf("microengine_bounties_expired_total: %q", m)
			}
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatalf("microengine_bounties_expired_total: %q", m)
			}
			return v
		}
		before := expired()
		b, key := mk.newBounty([]byte("late"), -time.Second)
		eng.sendBounty(b)
		// Counted as expired: the engine is done with it.
		deadline := time.Now().Add(10 * time.Second)
		for expired() == before {
			if time.Now().After(deadline) {
				t.Fatalf("expired bounty not counted after 10s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if as := mk.answersFor(key); len(as) != 0 {
			t.Fatalf("an expired bounty was answered: %+v", as)
		}
	})

	t.Run("redelivery is processed once", func(t *testing.T) {
		b, key := mk.newBounty(samples.EICAR(), 15*time.Second)
		body, _ := json.Marshal(b)
		for i, delivery := range []string{"same", "same", "other"} {
			if code, _ := eng.post("bounty", key+delivery, body, ""); code != http.StatusAccepted {
				t.Fatalf("delivery %d: %d, want 202", i, code)
			}
		}
		mk.waitAnswer(key, 10*time.Second)
		time.Sleep(time.Second)
		if n := len(mk.answersFor(key)); n != 1 {
			t.Fatalf("%d answers for one bounty delivered three times; want 1", n)
		}
	})

	t.Run("response_url failing twice then succeeding", func(t *testing.T) {
		b, key := mk.newBounty(samples.EICAR(), 20*time.Second)
		mk.mu.Lock()
		mk.failFirst[key] = 2
		mk.mu.Unlock()
		eng.sendBounty(b)
		checkAssertion(t, mk.waitAnswer(key, 15*time.Second), "malicious")
	})

	t.Run("the running engine lists its bounties", func(t *testing.T) {
		b, key := mk.newBounty(samples.EICAR(), 15*time.Second)
		eng.sendBounty(b)
		mk.waitAnswer(key, 10*time.Second)
		// The outcome is recorded just after the answer: ask until it is.
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, err := exec.Command(bins.host, "bounties", "-json", "-limit", "1", "-config", eng.cfg).Output()
			if err != nil {
				t.Fatalf("microengine bounties: %v\n%s", err, out)
			}
			var rec struct {
				Bounty struct{ ID int64 }       `json:"bounty"`
				State  string                   `json:"state"`
				Answer struct{ Verdict string } `json:"answer"`
			}
			err = json.Unmarshal(out, &rec)
			if err == nil && rec.Bounty.ID == b.ID && rec.State == "answered" && rec.Answer.Verdict == "malicious" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("newest stored bounty: %+v (%v); want %d answered malicious\n%s", rec, err, b.ID, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("arbitration is a vote without a bid", func(t *testing.T) {
		b, key := mk.newBounty(samples.EICAR(), 15*time.Second)
		b.Phase = "arbitration"
		eng.sendBounty(b)
		a := mk.waitAnswer(key, 10*time.Second)
		if a.Verdict != "malicious" || a.HasBid {
			t.Fatalf("arbitration answer %+v; want a malicious vote with no bid", a)
		}
	})
}

func keyOf(b bounty) string {
	i := strings.LastIndexByte(b.ResponseURL, '/')
	return b.ResponseURL[i+1:]
}

// TestKill9AfterAcceptStillAnswers kills the engine with SIGKILL after it
// accepted a bounty (202) and before it answered; the restarted engine
// resumes the stored bounty and answers before the expiration.
func TestKill9AfterAcceptStillAnswers(t *testing.T) {
	clamd := devclamd.StartT(t, devclamd.Options{})
	mk := newMarketplace(t)
	dir := engineDir(t, clamd, "")
	eng := startEngine(t, dir)

	b, key := mk.newBounty(samples.EICAR(), 25*time.Second)
	b.ArtifactURI = mk.srv.URL + "/hold/" + key
	eng.sendBounty(b)
	deadline := time.Now().Add(5 * time.Second)
	for mk.holdHits.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the engine never fetched the artifact")
		}
		time.Sleep(10 * time.Millisecond)
	}
	eng.kill9()
	close(mk.hold) // the artifact is served from now on
	if as := mk.answersFor(key); len(as) != 0 {
		t.Fatalf("answered before the kill: %+v", as)
	}

	startEngine(t, dir)
	a := mk.waitAnswer(key, 20*time.Second)
	exp, _ := time.Parse(time.RFC3339Nano, b.Expiration)
	if a.At.After(exp) {
		t.Fatalf("answered at %s, after the expiration %s", a.At, exp)
	}
	checkAssertion(t, a, "malicious")
}
