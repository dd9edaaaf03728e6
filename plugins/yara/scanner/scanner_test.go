package scanner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hillu/go-yara/v4"

	"github.com/microengine/microengine/shared"
)

// testdataRules is the project's rule set (see testdata/yara/README.md).
func testdataRules(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../../../testdata/yara")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func configured(t *testing.T, cfg string) *Scanner {
	t.Helper()
	s := New(nil)
	t.Cleanup(s.Close)
	if err := s.Configure(context.Background(), []byte(cfg)); err != nil {
		t.Fatalf("Configure(%s): %v", cfg, err)
	}
	return s
}

func rulesConfig(paths ...string) string {
	b, _ := json.Marshal(map[string]any{"rules": paths, "reload_interval": "0s"})
	return string(b)
}

func scan(t *testing.T, s *Scanner, content []byte, meta map[string]string) shared.Result {
	t.Helper()
	res, err := s.Scan(context.Background(), shared.Artifact{
		ID: "t", Type: shared.ArtifactFile, Size: int64(len(content)), Content: bytes.NewReader(content), Metadata: meta,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// marker builds sample content at run time (the rules hold it in hex).
func marker(name string) []byte {
	return []byte("a harmless test file: MICROENGINE-YARA-" + "TEST-" + name + "\n")
}

func matches(t *testing.T, res shared.Result) []Match {
	t.Helper()
	raw := res.Metadata[MetaMatches]
	if raw == "" {
		return nil
	}
	var ms []Match
	if err := json.Unmarshal([]byte(raw), &ms); err != nil {
		t.Fatalf("matches metadata %q: %v", raw, err)
	}
	return ms
}

func TestVerdictMappingOnTheProjectRules(t *testing.T) {
	s := configured(t, rulesConfig(testdataRules(t)))
	for _, tc := range []struct {
		content []byte
		meta    map[string]string
		verdict shared.Verdict
		family  string
		rule    string
		class   Class
	}{
		{marker("FAMILY"), nil, shared.VerdictMalicious, "MicroEngine.Test.Yara.Family", "families:Family_From_Meta", ClassMalicious},
		{marker("KIN"), nil, shared.VerdictMalicious, "MicroEngine.Test.Yara.Kin", "families:Family_From_Family_Meta", ClassMalicious},
		{marker("NAMELESS"), nil, shared.VerdictMalicious, "Family_From_Rule_Name", "families:Family_From_Rule_Name", ClassMalicious},
		{marker("SCORE-HIGH"), nil, shared.VerdictMalicious, "MicroEngine.Test.Yara.High", "scores:Score_High", ClassMalicious},
		{marker("SCORE-MID"), nil, shared.VerdictSuspicious, "", "scores:Score_Mid", ClassSuspicious},
		{marker("SCORE-LOW"), nil, shared.VerdictBenign, "", "scores:Score_Low", ClassInformational},
		{marker("HUNTING"), nil, shared.VerdictBenign, "", "informational:Hunting_Tag", ClassInformational},
		{marker("INFO"), nil, shared.VerdictBenign, "", "informational:Info_Category", ClassInformational},
		// The externals rule needs the file name: .vbs is malicious, anything else not.
		{marker("SCRIPT"), map[string]string{"filename": "dropper.vbs"}, shared.VerdictMalicious, "MicroEngine.Test.Yara.Script", "externals:Script_Extension_Marker", ClassMalicious},
		{marker("SCRIPT"), map[string]string{"filename": "notes.txt"}, shared.VerdictBenign, "", "", ""},
		{marker("SCRIPT"), nil, shared.VerdictBenign, "", "", ""},
		{[]byte("nothing to see\n"), nil, shared.VerdictBenign, "", "", ""},
		{nil, nil, shared.VerdictBenign, "", "", ""},
	} {
		res := scan(t, s, tc.content, tc.meta)
		name := strings.TrimSpace(string(tc.content))
		if res.Verdict != tc.verdict || res.MalwareFamily != tc.family {
			t.Errorf("%q %v: %s %q (%s); want %s %q", name, tc.meta, res.Verdict, res.MalwareFamily, res.Reason, tc.verdict, tc.family)
		}
		ms := matches(t, res)
		switch {
		case tc.rule == "" && len(ms) > 0:
			t.Errorf("%q: matches %+v; want none", name, ms)
		case tc.rule != "" && (len(ms) != 1 || ms[0].Rule != tc.rule || ms[0].Class != tc.class):
			t.Errorf("%q: matches %+v; want %s as %s", name, ms, tc.rule, tc.class)
		}
		if res.Metadata[MetaSignaturesVersion] == "" || res.Metadata[MetaVendorVersion] != LibraryVersion {
			t.Errorf("%q: metadata %v lacks the versions", name, res.Metadata)
		}
	}
	// The meta that decided travels with the match.
	ms := matches(t, scan(t, s, marker("SCORE-MID"), nil))
	if ms[0].Meta["score"] != "50" {
		t.Errorf("Score_Mid meta %v; want score 50", ms[0].Meta)
	}
}

func TestMappingIsConfigurable(t *testing.T) {
	cfg := fmt.Sprintf(`{"rules": [%q], "reload_interval": "0s", "malicious_score": 50, "suspicious_score": 10,
		"family_meta": ["description"], "informational": ["nothing"], "confidence": 0.6}`, testdataRules(t))
	s := configured(t, cfg)
	for content, want := range map[string]shared.Verdict{
		"SCORE-MID": shared.VerdictMalicious, "SCORE-LOW": shared.VerdictSuspicious, "HUNTING": shared.VerdictMalicious,
	} {
		if res := scan(t, s, marker(content), nil); res.Verdict != want {
			t.Errorf("%s: %s, want %s", content, res.Verdict, want)
		}
	}
	res := scan(t, s, marker("FAMILY"), nil)
	if !strings.HasPrefix(res.MalwareFamily, "marker FAMILY") || res.Confidence != 0.6 {
		t.Errorf("family from description, confidence 0.6: got %q %v", res.MalwareFamily, res.Confidence)
	}
	if res := scan(t, s, marker("SCORE-HIGH"), nil); res.Confidence != 0.6 {
		t.Errorf("score 80 under confidence 0.6: %v; want 0.6", res.Confidence)
	}
}

// TestScoreAndFamilyFromOtherMetaKeys maps rules written as Elastic's
// protections-artifacts writes them: no score, a severity (0–100) and a
// threat_name. By default every one is malicious under its rule's name
// (Elastic's 831 vulnerable-driver rules at severity 50 among them);
// score_meta and family_meta read them as the collection means them.
func TestScoreAndFamilyFromOtherMetaKeys(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "elastic.yar"), []byte(`
rule Windows_VulnDriver_Test_0a1b2c3d {
  meta:
    threat_name = "Windows.VulnDriver.Test"
    severity = 50
  strings:
    $a = "VULNDRIVER-MARK"
  condition:
    $a
}
rule Windows_Trojan_Test_4e5f6a7b {
  meta:
    threat_name = "Windows.Trojan.Test"
    severity = 100
  strings:
    $a = "TROJAN-MARK"
  condition:
    $a
}
rule both_scores {
  meta:
    score = 90
    severity = 10
  strings:
    $a = "BOTH-MARK"
  condition:
    $a
}
`), 0o644)
	type want struct {
		verdict shared.Verdict
		family  string
	}
	for _, tc := range []struct {
		cfg  string
		want map[string]want
	}{
		{fmt.Sprintf(`{"rules": [%q], "reload_interval": "0s"}`, dir), map[string]want{
			"VULNDRIVER-MARK": {shared.VerdictMalicious, "Windows_VulnDriver_Test_0a1b2c3d"},
			"TROJAN-MARK":     {shared.VerdictMalicious, "Windows_Trojan_Test_4e5f6a7b"},
			"BOTH-MARK":       {shared.VerdictMalicious, "both_scores"},
		}},
		{fmt.Sprintf(`{"rules": [%q], "reload_interval": "0s", "score_meta": ["score", "severity"], "family_meta": ["threat_name"]}`, dir), map[string]want{
			"VULNDRIVER-MARK": {shared.VerdictSuspicious, ""},
			"TROJAN-MARK":     {shared.VerdictMalicious, "Windows.Trojan.Test"},
			"BOTH-MARK":       {shared.VerdictMalicious, "both_scores"}, // the first key present decides
		}},
		{fmt.Sprintf(`{"rules": [%q], "reload_interval": "0s", "score_meta": ["severity"]}`, dir), map[string]want{
			"BOTH-MARK": {shared.VerdictBenign, ""}, // severity 10: informational
		}},
	} {
		s := configured(t, tc.cfg)
		for content, w := range tc.want {
			res := scan(t, s, []byte("a harmless test file: "+content+"\n"), nil)
			if res.Verdict != w.verdict || res.MalwareFamily != w.family {
				t.Errorf("%s with %s: %s %q; want %s %q", content, tc.cfg, res.Verdict, res.MalwareFamily, w.verdict, w.family)
			}
		}
	}
}

func TestLargeArtifactsAreSpooledAndMatchedAcrossEveryBoundary(t *testing.T) {
	s := configured(t, rulesConfig(testdataRules(t)))
	m := marker("FAMILY")
	for _, off := range []int{0, spoolBufSize - 10, spoolBufSize, 3*spoolBufSize - len(m)/2, 5<<20 - len(m)} {
		content := make([]byte, 5<<20)
		copy(content[off:], m)
		for name, r := range map[string]io.Reader{
			"whole":  bytes.NewReader(content),
			"halves": iotest.HalfReader(bytes.NewReader(content)),
		} {
			res, err := s.Scan(context.Background(), shared.Artifact{Type: shared.ArtifactFile, Size: -1, Content: r})
			if err != nil || res.Verdict != shared.VerdictMalicious || res.BytesScanned != int64(len(content)) {
				t.Errorf("marker at %d, %s reads: %+v %v; want malicious over %d bytes", off, name, res, err, len(content))
			}
		}
	}
}

func TestFaultsAreNeverBenign(t *testing.T) {
	ctx := context.Background()
	if res, err := New(nil).Scan(ctx, shared.Artifact{Type: shared.ArtifactFile, Size: 3, Content: strings.NewReader("abc")}); err != nil || res.Verdict != shared.VerdictUnknown {
		t.Errorf("unconfigured: %+v %v; want unknown", res, err)
	}
	s := configured(t, rulesConfig(testdataRules(t)))
	for name, a := range map[string]shared.Artifact{
		"short stream":    {Type: shared.ArtifactFile, Size: 10, Content: strings.NewReader("abc")},
		"long stream":     {Type: shared.ArtifactFile, Size: 1, Content: strings.NewReader("abc")},
		"long spool":      {Type: shared.ArtifactFile, Size: 1 << 20, Content: bytes.NewReader(make([]byte, 2<<20))},
		"read error":      {Type: shared.ArtifactFile, Size: -1, Content: iotest.ErrReader(errors.New("disk on fire"))},
		"late read error": {Type: shared.ArtifactFile, Size: -1, Content: io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), iotest.ErrReader(errors.New("gone")))},
		"url":             {Type: shared.ArtifactURL, Size: 3, Content: strings.NewReader("x.y")},
		"no content":      {Type: shared.ArtifactFile, Size: 5},
	} {
		res, err := s.Scan(ctx, a)
		if err != nil || res.Verdict != shared.VerdictUnknown || res.Reason == "" {
			t.Errorf("%s: %+v %v; want unknown with a reason", name, res, err)
		}
	}
	// A libyara error (here its scan timeout, ERROR_SCAN_TIMEOUT = 26) is
	// unknown, and the matches found before it are still reported.
	st := s.cur.Load()
	res, err := s.run(ctx, st, nil, func(sc *yara.Scanner) error {
		if err := sc.ScanMem(marker("FAMILY")); err != nil {
			return err
		}
		return yara.Error(26)
	}, nil)
	if err != nil || res.Verdict != shared.VerdictUnknown || !strings.Contains(res.Reason, "scan timeout") || len(matches(t, res)) != 1 {
		t.Errorf("a scan that timed out: %+v %v; want unknown: scan timeout, with the match so far", res, err)
	}
}

func TestCancelReturnsPromptly(t *testing.T) {
	s := configured(t, rulesConfig(testdataRules(t)))
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	go func() {
		pw.Write(make([]byte, 1<<20))
		cancel()
		// The shim's reader ends with the context's error when cancelled.
		pw.CloseWithError(context.Canceled)
	}()
	_, err := s.Scan(ctx, shared.Artifact{Type: shared.ArtifactFile, Size: -1, Content: pr})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled mid-stream: %v; want context.Canceled", err)
	}
}

func TestConfigFaultsNameTheirField(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yar")
	os.WriteFile(bad, []byte("rule a {\n  condition:\n    nosuch\n}\n"), 0o644)
	for cfg, want := range map[string][]string{
		`{}`:                                {"rules: is required"},
		`{"rules": "x"}`:                    {"rules: want a []string"},
		`{"rules": ["/x"], "no_such": 1}`:   {"no_such: unknown attribute"},
		`{"rules": ["/nonexistent/r.yar"]}`: {"rules[0]: stat /nonexistent/r.yar"},
		`{"rules": ["/x"], "externals": {"a": 1.5, "b c": "x"}}`:                  {"externals.a: want a string", `externals.b c: "b c" is not a valid`},
		`{"rules": ["/x"], "malicious_score": 120, "confidence": 2}`:              {"malicious_score: must be between 0 and 100", "confidence: must be between 0 and 1"},
		fmt.Sprintf(`{"rules": [%q]}`, bad):                                       {"rules: " + bad + `:3: undefined identifier "nosuch"`},
		fmt.Sprintf(`{"rules": [%q, %q], "strict": true}`, bad, testdataRules(t)): {"rules: " + bad + ":3:", "rules: strict"},
	} {
		err := New(nil).Configure(context.Background(), []byte(cfg))
		var ce *shared.ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: %v; want a *shared.ConfigError", cfg, err)
			continue
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v; want it to say %q", cfg, err, w)
			}
		}
	}
	// Not strict: the bad file is skipped and named by Health.
	s := configured(t, fmt.Sprintf(`{"rules": [%q, %q], "reload_interval": "0s"}`, bad, testdataRules(t)))
	h, _ := s.Health(context.Background())
	if !h.Healthy || !strings.Contains(h.Message, "1 files skipped: "+bad+`:3: undefined identifier "nosuch"`) {
		t.Errorf("health %+v; want healthy, naming the skipped file at its line", h)
	}
}

// TestManyCompileErrorsAreQuotedNotFlooded loads a set with as many
// failing files as a public collection holds (Yara-Rules: 131 errors in 53
// files). A strict Configure, a failed reload and Health each quote the
// first maxHealthErrors at file:line and then how many more; the log has
// every one.
func TestManyCompileErrorsAreQuotedNotFlooded(t *testing.T) {
	dir := t.TempDir()
	const files = 40
	var want []string
	for i := range files {
		f := filepath.Join(dir, fmt.Sprintf("bad%02d.yar", i))
		os.WriteFile(f, []byte("import \"androguard\"\nrule a {\n  condition:\n    nosuch\n}\n"), 0o644)
		want = append(want, f+`:1: unknown module "androguard"`, f+`:4: undefined identifier "nosuch"`)
	}
	good := testdataRules(t)
	var logged bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logged, Level: hclog.Warn})
	everyErrorLogged := func(what string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(logged.String(), strconv.Quote(w)) {
				t.Errorf("%s: the log lacks %s", what, w)
				return
			}
		}
	}
	quoted := func(what, msg string, n int) {
		t.Helper()
		for _, w := range want[:maxHealthErrors] {
			if !strings.Contains(msg, w) {
				t.Errorf("%s does not quote %s", what, w)
			}
		}
		if strings.Contains(msg, want[maxHealthErrors]) || !strings.Contains(msg, fmt.Sprintf("and %d more errors (%d files in all", 2*files-maxHealthErrors, files)) {
			t.Errorf("%s quotes more than %d errors or does not count the rest: %.300s…", what, maxHealthErrors, msg)
		}
		if n > maxHealthErrors+2 {
			t.Errorf("%s: %d faults; want at most %d", what, n, maxHealthErrors+2)
		}
	}

	s := New(log)
	t.Cleanup(s.Close)
	err := s.Configure(context.Background(), []byte(fmt.Sprintf(`{"rules": [%q, %q], "strict": true, "reload_interval": "0s"}`, dir, good)))
	var ce *shared.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("strict Configure: %v; want a *shared.ConfigError", err)
	}
	quoted("strict Configure", err.Error(), len(ce.Fields))
	everyErrorLogged("strict Configure")

	// Not strict: loads, and Health quotes the skipped files' errors.
	logged.Reset()
	if err := s.Configure(context.Background(), []byte(fmt.Sprintf(`{"rules": [%q, %q], "reload_interval": "0s"}`, dir, good))); err != nil {
		t.Fatal(err)
	}
	h, _ := s.Health(context.Background())
	quoted("Health", h.Message, 0)
	everyErrorLogged("a load that skips them")

	// A reload in which a file that loaded before fails: quoted in Health.
	logged.Reset()
	extra := t.TempDir()
	var extraWant []string
	for i := range files {
		f := filepath.Join(extra, fmt.Sprintf("late%02d.yar", i))
		os.WriteFile(f, []byte(fmt.Sprintf("rule late%d { condition: true and filesize > 0 }\n", i)), 0o644)
		extraWant = append(extraWant, f)
	}
	s = configured(t, fmt.Sprintf(`{"rules": [%q, %q], "reload_interval": "0s"}`, extra, good))
	s.log = log
	for _, f := range extraWant {
		os.WriteFile(f, []byte("rule broken {\n  condition:\n    nosuch\n}\n"), 0o644)
		bump(t, f)
	}
	if err := s.Reload(); err == nil {
		t.Fatal("a reload that breaks every file succeeded")
	}
	h, _ = s.Health(context.Background())
	if h.Healthy || strings.Count(h.Message, `undefined identifier "nosuch"`) != maxHealthErrors || !strings.Contains(h.Message, fmt.Sprintf("and %d more errors", files-maxHealthErrors)) {
		t.Errorf("health after a failed reload quotes the wrong errors: %.400s…", h.Message)
	}
	for _, f := range extraWant {
		if !strings.Contains(logged.String(), strconv.Quote(f+`:3: undefined identifier "nosuch"`)) {
			t.Errorf("failed reload: the log lacks %s", f)
			break
		}
	}
}

func TestHotReloadSwapsGoodSetsAndKeepsTheOldOnFailure(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "r.yar")
	rule := func(name, text string) string {
		return fmt.Sprintf("rule %s { strings: $a = %q condition: $a }\n", name, text)
	}
	os.WriteFile(p, []byte(rule("first", "FIRST-MARKER")), 0o644)
	s := configured(t, rulesConfig(dir))
	info, _ := s.Info(context.Background())
	v1 := info.SignaturesVersion
	if !strings.HasPrefix(v1, "2 rules ") { // the file's rule and the built-in self-test
		t.Fatalf("signatures version %q", v1)
	}
	if err := s.Reload(); !errors.Is(err, ErrUnchanged) {
		t.Errorf("reload of unchanged files: %v", err)
	}

	// A good change is swapped in.
	os.WriteFile(p, []byte(rule("first", "FIRST-MARKER")+rule("second", "SECOND-MARKER")), 0o644)
	bump(t, p)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	info, _ = s.Info(context.Background())
	if info.SignaturesVersion == v1 || !strings.HasPrefix(info.SignaturesVersion, "3 rules ") {
		t.Errorf("after a good reload: %q", info.SignaturesVersion)
	}
	if res := scan(t, s, []byte("SECOND-MARKER"), nil); res.Verdict != shared.VerdictMalicious {
		t.Errorf("the new rule: %s", res.Verdict)
	}
	v2 := info.SignaturesVersion

	// A broken change keeps the previous set, and says so.
	os.WriteFile(p, []byte("rule first { condition: nosuch }\n"), 0o644)
	bump(t, p)
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "r.yar:1:") {
		t.Errorf("broken reload: %v; want the file:line", err)
	}
	info, _ = s.Info(context.Background())
	h, _ := s.Health(context.Background())
	if info.SignaturesVersion != v2 || h.Healthy || !strings.HasPrefix(h.Message, "RELOAD FAILED") || h.SignaturesVersion != v2 {
		t.Errorf("after a failed reload: version %q (want %q), health %+v", info.SignaturesVersion, v2, h)
	}
	if res := scan(t, s, []byte("SECOND-MARKER"), nil); res.Verdict != shared.VerdictMalicious {
		t.Errorf("the previous set stopped serving: %s", res.Verdict)
	}
	if err := s.Reload(); !errors.Is(err, ErrUnchanged) {
		t.Errorf("the same broken files are compiled again: %v", err)
	}
	// Fixed: swapped in, healthy again.
	os.WriteFile(p, []byte(rule("third", "THIRD-MARKER")), 0o644)
	bump(t, p)
	bump(t, p)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.Health(context.Background()); !h.Healthy || !strings.Contains(h.Message, "reloaded 2 times") {
		t.Errorf("after the fix: %+v", h)
	}
}

// TestWatchReloadsOnItsOwn: the reload loop notices a new file.
// TestReplacedSetIsReleasedWhenItsScansEnd reloads under a scan in flight:
// the old set serves that scan to its end and is destroyed then (not when
// Go's finalizers get to it: each reload of a 61,000-rule set kept ~250 MB
// more); a scan that took the old set just before the swap runs on the
// new one.
func TestReplacedSetIsReleasedWhenItsScansEnd(t *testing.T) {
	dir := t.TempDir()
	rule := filepath.Join(dir, "r.yar")
	os.WriteFile(rule, []byte(`rule one { strings: $a = "ONE-MARK" condition: $a }`), 0o644)
	s := configured(t, rulesConfig(dir))
	old := s.cur.Load()
	if !old.enter() { // a scan in flight on the old set
		t.Fatal("the current set refused a scan")
	}
	os.WriteFile(rule, []byte(`rule two { strings: $a = "TWO-MARK" condition: $a }`), 0o644)
	bump(t, rule)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if !old.retired || old.released {
		t.Fatalf("after the swap: retired %v, released %v; want retired, kept for its scan", old.retired, old.released)
	}
	if res, err := s.scanBytes(context.Background(), old, []byte("TWO-MARK"), nil); err != nil || res.MalwareFamily != "two" {
		t.Errorf("a scan that took the old set after the swap: %+v %v; want it on the new set", res, err)
	} else if got, want := res.Metadata[MetaSignaturesVersion], s.cur.Load().set.Version(); got != want {
		t.Errorf("a scan run on the new set reports signatures %q, want the new set's %q", got, want)
	}
	old.leave()
	if !old.released {
		t.Fatal("the old set outlived its last scan")
	}
	if res := scan(t, s, []byte("ONE-MARK TWO-MARK"), nil); res.MalwareFamily != "two" {
		t.Errorf("after the release: %+v", res)
	}

	// A new config replaces the set at once when nothing scans on it.
	cur := s.cur.Load()
	if err := s.Configure(context.Background(), []byte(fmt.Sprintf(`{"rules": [%q], "reload_interval": "0s", "confidence": 0.5}`, dir))); err != nil {
		t.Fatal(err)
	}
	if !cur.released {
		t.Error("the set of the previous config was not released")
	}
	if res := scan(t, s, []byte("TWO-MARK"), nil); res.Verdict != shared.VerdictMalicious || res.Confidence != 0.5 {
		t.Errorf("on the new config: %+v", res)
	}
}

func TestWatchReloadsOnItsOwn(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.yar"), []byte(`rule a { strings: $a = "AAA-MARKER" condition: $a }`), 0o644)
	s := configured(t, fmt.Sprintf(`{"rules": [%q], "reload_interval": "20ms"}`, dir))
	os.WriteFile(filepath.Join(dir, "b.yar"), []byte(`rule b { strings: $a = "BBB-MARKER" condition: $a }`), 0o644)
	bump(t, dir)
	deadline := time.Now().Add(10 * time.Second)
	for scan(t, s, []byte("BBB-MARKER"), nil).Verdict != shared.VerdictMalicious {
		if time.Now().After(deadline) {
			t.Fatal("the new rule file was not loaded within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bump moves a file's modification time forward: two writes within the
// file system's timestamp granularity would otherwise look the same.
func bump(t *testing.T, p string) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	next := fi.ModTime().Add(time.Second)
	if err := os.Chtimes(p, next, next); err != nil {
		t.Fatal(err)
	}
}

func TestSelfTestSampleAndHealth(t *testing.T) {
	s := New(nil)
	if h, _ := s.Health(context.Background()); h.Healthy {
		t.Errorf("unconfigured plugin reports healthy: %+v", h)
	}
	s = configured(t, rulesConfig(testdataRules(t)))
	res := scan(t, s, SelfTestSample(), nil)
	if res.Verdict != shared.VerdictMalicious || res.MalwareFamily != SelfTestFamily {
		t.Errorf("self-test sample: %+v", res)
	}
	h, _ := s.Health(context.Background())
	if !h.Healthy || h.SignaturesVersion == "" || !strings.Contains(h.Message, "11 rules from 4 files") {
		t.Errorf("health %+v", h)
	}
}

// TestMappedScanSeesTheWholeFileWhileTrimmed: a large artifact is scanned
// from its mapping while the trimmer drops its pages; conditions that read
// the start after the pass has gone by still see the bytes.
func TestMappedScanSeesTheWholeFileWhileTrimmed(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "far.yar"), []byte(`rule far {
  strings:
    $h = "HEADMARK"
    $t = "TAILMARK"
  condition:
    $h at 0 and $t at filesize - 8 and uint32be(0) == 0x48454144 and uint32be(filesize - 4) == 0x4D41524B
}`), 0o644)
	s := configured(t, rulesConfig(dir))
	content := make([]byte, 96<<20)
	copy(content, "HEADMARK")
	copy(content[len(content)-8:], "TAILMARK")
	if res := scan(t, s, content, nil); res.Verdict != shared.VerdictMalicious || res.BytesScanned != int64(len(content)) {
		t.Errorf("96 MiB with marks at both ends: %+v", res)
	}
	copy(content, "HEADMARX")
	if res := scan(t, s, content, nil); res.Verdict != shared.VerdictBenign {
		t.Errorf("without the head mark: %+v", res)
	}
}

// TestByReference: a file the host passes is mapped and scanned in place,
// and closing the descriptor once Scan returns is fine; a file whose size
// is not the announced one is unknown.
func TestByReference(t *testing.T) {
	s := configured(t, rulesConfig(testdataRules(t)))
	p := filepath.Join(t.TempDir(), "artifact")
	content := make([]byte, 3<<20)
	m := marker("FAMILY")
	copy(content[len(content)-len(m):], m)
	os.WriteFile(p, content, 0o644)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		size int64
		want shared.Verdict
	}{{int64(len(content)), shared.VerdictMalicious}, {int64(len(content)) - 1, shared.VerdictUnknown}} {
		res, err := s.Scan(context.Background(), shared.Artifact{Type: shared.ArtifactFile, Size: tc.size, File: f,
			Content: io.NewSectionReader(f, 0, tc.size)})
		if err != nil || res.Verdict != tc.want {
			t.Errorf("size %d: %+v %v; want %s", tc.size, res, err, tc.want)
		}
	}
	info, _ := s.Info(context.Background())
	if !info.ByReference {
		t.Error("Info does not declare ByReference")
	}
}

// libyara stops recording a string's matches at YR_MAX_STRING_MATCHES and
// go-yara v4.2.4 drops the CALLBACK_MSG_TOO_MANY_MATCHES that says so: the
// scan succeeds on a truncated count. Here "#b > 1000000" does not match
// 1,000,001 "A"s: without the check the verdict would rest on one_a alone,
// and a set holding only many_a would call the file benign.
func TestTooManyMatchesIsUnknown(t *testing.T) {
	dir := t.TempDir()
	rule := "rule one_a { strings: $a = \"A\" condition: $a }\n" +
		"rule many_a { strings: $b = \"A\" condition: #b > 1000000 }\n"
	if err := os.WriteFile(filepath.Join(dir, "many.yar"), []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	s := configured(t, rulesConfig(dir))
	atCap := bytes.Repeat([]byte("A"), MaxStringMatches)
	over := append(atCap, 'A')

	// Exactly the cap is recorded in full: a verdict.
	if res := scan(t, s, atCap, nil); res.Verdict != shared.VerdictMalicious {
		t.Errorf("%d matches: %+v; want malicious (one_a)", len(atCap), res)
	}
	// One more is truncated: unknown, naming the string, with the matches seen.
	res := scan(t, s, over, nil)
	if res.Verdict != shared.VerdictUnknown || !strings.Contains(res.Reason, "too many matches") || !strings.Contains(res.Reason, "many:one_a $a") {
		t.Errorf("%d matches: %+v; want unknown: too many matches (many:one_a $a)", len(over), res)
	}
	if ms := matches(t, res); len(ms) != 1 || ms[0].Rule != "many:one_a" {
		t.Errorf("matches of the truncated scan: %+v; want many:one_a", ms)
	}
	// libyara clears the flag for the next scan on the same (pooled) scanner.
	if res := scan(t, s, []byte("AAA"), nil); res.Verdict != shared.VerdictMalicious {
		t.Errorf("the next scan: %+v; want malicious (one_a)", res)
	}
}
