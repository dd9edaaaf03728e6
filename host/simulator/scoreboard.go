package simulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/microengine/microengine/internal/answerschema"
	"github.com/microengine/microengine/shared"
)

// Scoreboard is the outcome of a simulation.
type Scoreboard struct {
	Sent int `json:"sent"`
	// Accepted webhooks got 202; Refused got anything else or failed.
	Accepted int `json:"accepted"`
	Refused  int `json:"refused"`
	// Answered before the expiration, split into Correct (the expected
	// verdict), Unknown (unknown where another was expected), Wrong (any
	// other verdict) and Unscored (samples with no expected verdict).
	Answered int `json:"answered"`
	Correct  int `json:"correct"`
	Wrong    int `json:"wrong"`
	Unknown  int `json:"unknown"`
	Unscored int `json:"unscored"`
	// Late answers came after the expiration; Missing never came.
	Late    int `json:"late"`
	Missing int `json:"missing"`
	// Invalid answers broke the protocol (e.g. a float bid, a bid out of
	// the rules, no malware_family); they are also counted above.
	Invalid int `json:"invalid"`
	// Duplicates are answers after a bounty's first (the marketplace
	// takes one answer per bounty); Conflicting are the duplicates whose
	// verdict or bid differ from the first. Both count as faults: an
	// engine that answers twice has lost track of what it answered.
	// Only those that arrive before the run ends are seen.
	Duplicates  int `json:"duplicates"`
	Conflicting int `json:"conflicting"`
	// Unsent bounties were planned (Options.Count) but never sent: the
	// run was cancelled. A run that did not send them all is not a pass.
	Unsent   int            `json:"unsent"`
	Verdicts map[string]int `json:"verdicts"`
	// Latency from sending a bounty to receiving its answer, all answers.
	Latency  Latency `json:"latency_ms"`
	Seconds  float64 `json:"seconds"`
	SendRate float64 `json:"send_rate"`
	// Fetches counts the artifact downloads the engine made (a verdict
	// cache answers a known sha256 without one).
	Fetches int      `json:"fetches"`
	Errors  []string `json:"errors,omitempty"`
	// Plugins is each backend's agreement, by plugin name (see
	// PluginAgreement); empty when the answers do not list backends.
	Plugins map[string]PluginAgreement `json:"plugins,omitempty"`
}

// Latency percentiles, in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// OK reports whether every planned bounty was sent and got exactly one
// valid, on-time answer that was not wrong. Unknown answers are allowed
// here (a missing backend earns them); callers that expect a working
// backend bound UnknownShare themselves.
func (s *Scoreboard) OK() bool {
	return s.Unsent == 0 && s.Refused == 0 && s.Wrong == 0 && s.Late == 0 && s.Missing == 0 &&
		s.Invalid == 0 && s.Duplicates == 0
}

// UnknownShare is the share of the bounties sent that were answered
// unknown where another verdict was expected, from 0 to 1.
func (s *Scoreboard) UnknownShare() float64 {
	if s.Sent == 0 {
		return 0
	}
	return float64(s.Unknown) / float64(s.Sent)
}

func (s *sim) score(elapsed time.Duration) *Scoreboard {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := &Scoreboard{Verdicts: map[string]int{}, Seconds: elapsed.Seconds(), Errors: s.errors, Fetches: int(s.fetches.Load())}
	var lat []time.Duration
	var first, last time.Time
	tally := map[string]*PluginAgreement{}
	for i := range s.bounties {
		b := &s.bounties[i]
		if b.sample == nil {
			sb.Unsent++ // the run was cancelled first
			continue
		}
		sb.Sent++
		if first.IsZero() || b.sentAt.Before(first) {
			first = b.sentAt
		}
		if b.sentAt.After(last) {
			last = b.sentAt
		}
		if b.accepted {
			sb.Accepted++
		} else {
			sb.Refused++
		}
		sb.Duplicates += b.duplicates
		sb.Conflicting += b.conflicting
		if !b.answered {
			if b.accepted {
				sb.Missing++
			}
			continue
		}
		lat = append(lat, b.answeredAt.Sub(b.sentAt))
		sb.Verdicts[string(b.verdict)]++
		agree(tally, b.sample, b.backends)
		if b.invalid != "" {
			sb.Invalid++
		}
		switch {
		case b.answeredAt.After(b.expiration):
			sb.Late++
			continue
		case b.sample.Expected == "":
			sb.Unscored++
		case b.verdict == b.sample.Expected:
			sb.Correct++
		case b.verdict == shared.VerdictUnknown:
			sb.Unknown++
		default:
			sb.Wrong++
		}
		sb.Answered++
	}
	if sb.Sent > 1 && last.After(first) {
		sb.SendRate = float64(sb.Sent-1) / last.Sub(first).Seconds()
	}
	sb.Latency = percentiles(lat)
	if len(tally) > 0 {
		sb.Plugins = make(map[string]PluginAgreement, len(tally))
		for n, a := range tally {
			sb.Plugins[n] = *a
		}
	}
	return sb
}

func percentiles(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	at := func(p float64) float64 {
		i := int(p*float64(len(ds))+0.999999) - 1 // nearest rank
		return ms(ds[min(max(i, 0), len(ds)-1)])
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return Latency{P50: at(.50), P90: at(.90), P99: at(.99), Max: ms(ds[len(ds)-1]), Mean: ms(sum / time.Duration(len(ds)))}
}

// WriteText prints the scoreboard for people.
func (s *Scoreboard) WriteText(w io.Writer) {
	fmt.Fprintf(w, "bounties  sent %d  accepted %d  refused %d  (%.1f/s)\n", s.Sent, s.Accepted, s.Refused, s.SendRate)
	fmt.Fprintf(w, "answers   answered %d  correct %d  wrong %d  unknown %d  late %d  missing %d",
		s.Answered, s.Correct, s.Wrong, s.Unknown, s.Late, s.Missing)
	if s.Unscored > 0 {
		fmt.Fprintf(w, "  unscored %d", s.Unscored)
	}
	if s.Invalid > 0 {
		fmt.Fprintf(w, "  INVALID %d", s.Invalid)
	}
	if s.Duplicates > 0 {
		fmt.Fprintf(w, "  DUPLICATES %d (conflicting %d)", s.Duplicates, s.Conflicting)
	}
	if s.Unsent > 0 {
		fmt.Fprintf(w, "  UNSENT %d", s.Unsent)
	}
	fmt.Fprintln(w)
	names := make([]string, 0, len(s.Verdicts))
	for v := range s.Verdicts {
		names = append(names, v)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, v := range names {
		parts = append(parts, fmt.Sprintf("%s %d", v, s.Verdicts[v]))
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "verdicts  %s\n", strings.Join(parts, "  "))
	}
	writePlugins(w, s.Plugins)
	fmt.Fprintf(w, "latency   p50 %.1fms  p90 %.1fms  p99 %.1fms  max %.1fms  (bounty sent → answer received)\n",
		s.Latency.P50, s.Latency.P90, s.Latency.P99, s.Latency.Max)
	for _, e := range s.Errors {
		fmt.Fprintf(w, "error     %s\n", e)
	}
	if s.OK() {
		fmt.Fprintln(w, "result    OK")
	} else {
		fmt.Fprintln(w, "result    FAIL")
	}
}

// checkAnswer validates an assertion answer: a known verdict, a bid that
// is a JSON integer (0 for unknown and suspicious, within the rules
// otherwise) and metadata with a malware_family string. It returns the
// verdict and what is wrong, if anything.
func checkAnswer(raw []byte, minBid, maxBid string) (shared.Verdict, string) {
	v, _, problem := checkAnswerBid(raw, minBid, maxBid)
	return v, problem
}

// checkAnswerBid is checkAnswer that also returns the bid as sent.
func checkAnswerBid(raw []byte, minBid, maxBid string) (v shared.Verdict, bid string, problem string) {
	v, problem = checkAnswerFields(raw, minBid, maxBid)
	var a struct {
		Bid json.RawMessage `json:"bid"`
	}
	if json.Unmarshal(raw, &a) == nil {
		bid = string(bytes.TrimSpace(a.Bid))
	}
	return v, bid, problem
}

func checkAnswerFields(raw []byte, minBid, maxBid string) (shared.Verdict, string) {
	var a map[string]json.RawMessage
	if err := json.Unmarshal(raw, &a); err != nil {
		return shared.VerdictUnknown, "not a JSON object"
	}
	var vs string
	if err := json.Unmarshal(a["verdict"], &vs); err != nil {
		return shared.VerdictUnknown, "verdict is not a string"
	}
	v, err := shared.ParseVerdict(vs)
	if err != nil || string(v) != vs {
		return shared.VerdictUnknown, fmt.Sprintf("verdict %q is not one of malicious, benign, suspicious, unknown", vs)
	}
	bidRaw := string(bytes.TrimSpace(a["bid"]))
	if bidRaw == "" {
		return v, "no bid in an assertion"
	}
	if strings.ContainsAny(bidRaw, ".eE\"") {
		return v, "bid " + bidRaw + " is not a JSON integer"
	}
	bid, ok := new(big.Int).SetString(bidRaw, 10)
	if !ok {
		return v, "bid " + bidRaw + " is not a JSON integer"
	}
	lo, _ := new(big.Int).SetString(minBid, 10)
	hi, _ := new(big.Int).SetString(maxBid, 10)
	switch v {
	case shared.VerdictUnknown, shared.VerdictSuspicious:
		if bid.Sign() != 0 {
			return v, fmt.Sprintf("a %s answer bids %s, not 0", v, bid)
		}
	default:
		if bid.Cmp(lo) < 0 || bid.Cmp(hi) > 0 {
			return v, fmt.Sprintf("bid %s is outside [%s, %s]", bid, lo, hi)
		}
	}
	var meta map[string]json.RawMessage
	if err := json.Unmarshal(a["metadata"], &meta); err != nil || meta == nil {
		return v, "metadata is not an object"
	}
	var family string
	if err := json.Unmarshal(meta["malware_family"], &family); err != nil {
		return v, "metadata.malware_family is not a string"
	}
	// The rest of the protocol's rules (ScanMetadata's fields and
	// patterns, comments, no family or confidence without a verdict), as
	// its JSON Schema states them.
	if err := answerschema.Check(raw, answerschema.Assertion); err != nil {
		return v, err.Error()
	}
	return v, ""
}
