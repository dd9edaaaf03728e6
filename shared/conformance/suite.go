package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/microengine/microengine/shared"
)

// suite returns the checks in the order they run: the handshake first,
// then what the plugin says about itself, then scans, and last the checks
// that break something (the backend), since nothing after them could rely
// on it. It is built by a function so no check table is shared mutable
// state.
func suite() []check {
	return []check{
		{CheckInfo{"HANDSHAKE-001", MUST,
			"the plugin starts and completes the go-plugin handshake as the host launches it (gRPC only, its socket in the host's private directory, magic cookie, sha256 pin when given) and dispenses the scanner",
			"a dispensed scanner"}, checkHandshake},
		{CheckInfo{"HANDSHAKE-002", MUST,
			fmt.Sprintf("the plugin serves plugin protocol version %d over gRPC", shared.ProtocolVersion),
			fmt.Sprintf("protocol version %d negotiated over grpc", shared.ProtocolVersion)}, checkProtocolVersion},
		{CheckInfo{"HANDSHAKE-003", MUST,
			"the plugin completes its handshake within the start timeout",
			"the handshake line within the start timeout"}, checkStartTimeout},
		{CheckInfo{"STDOUT-001", MUST,
			"the plugin writes nothing to stdout before its handshake line (go-plugin reads the handshake from stdout)",
			"the handshake line as the first line on stdout"}, checkStdoutBeforeHandshake},
		{CheckInfo{"INFO-001", MUST,
			"Info answers with a name, a semantic version and at least one artifact type",
			"a non-empty name without spaces, a MAJOR.MINOR.PATCH version, artifact types"}, checkInfo},
		{CheckInfo{"INFO-003", MUST,
			"the config schema is well-formed, so the host can decode the plugin's block in engine.hcl",
			"unique HCL attribute names, known field types, defaults that parse as their type"}, checkConfigSchema},
		{CheckInfo{"INFO-004", SHOULD,
			"Info vouches for samples: at least one malicious sample with its family and one benign sample",
			"named samples with a verdict other than unknown, including a malicious one with a family"}, checkSamplesDeclared},
		{CheckInfo{"CONFIG-001", MUST,
			"Configure accepts the suite's config",
			"Configure returns no error"}, checkConfigAccepted},
		// After CONFIG-001: a plugin with a backend learns the backend's
		// version only once it knows where the backend is.
		{CheckInfo{"INFO-002", SHOULD,
			"once configured, Info (or Health) names the vendor (backend) and its version, which the host reports in every response's metadata",
			"non-empty vendor and vendor_version"}, checkInfoVendor},
		{CheckInfo{"HEALTH-001", MUST,
			"the plugin answers health checks: go-plugin's gRPC health service and the plugin's Health",
			"both answer within the call timeout"}, checkHealthAnswers},
		{CheckInfo{"HEALTH-002", MUST,
			"the plugin reports healthy once configured with a reachable backend",
			"Health reports healthy"}, checkHealthy},
		{CheckInfo{"SCAN-001", MUST,
			"benign content is scanned benign",
			"benign for each benign sample and for plain text"}, checkBenignSamples},
		{CheckInfo{"SCAN-002", MUST,
			"the plugin detects the malicious samples it vouches for",
			"malicious with the declared family (or a family, when none is declared)"}, checkPositiveSamples},
		{CheckInfo{"SCAN-003", MUST,
			"an empty file artifact gets a valid verdict",
			"a verdict, not an error, and not malicious"}, checkEmptyAnswered},
		{CheckInfo{"SCAN-004", SHOULD,
			"an empty file artifact is benign",
			"benign"}, checkEmptyBenign},
		{CheckInfo{"SCAN-005", MUST,
			"an artifact whose size is not announced (size -1) gets the same verdict",
			"the same verdict as with the size announced"}, checkUnknownSize},
		{CheckInfo{"CHUNK-001", MUST,
			"the plugin accepts content in 1-byte chunks",
			"the same verdict as with the default chunk size, for every sample"}, chunkCheck(1)},
		{CheckInfo{"CHUNK-002", MUST,
			"the plugin accepts content in 3-byte chunks",
			"the same verdict as with the default chunk size, for every sample"}, chunkCheck(3)},
		{CheckInfo{"CHUNK-003", MUST,
			"the plugin accepts content in 1 MiB chunks (the largest the host sends)",
			"the same verdict as with the default chunk size, for every sample and a 2.5 MiB file"}, chunkCheck(shared.MaxChunkSize)},
		{CheckInfo{"CHUNK-004", MUST,
			"a malicious sample embedded across chunk boundaries gets the same verdict however the stream is chunked",
			"one verdict per embedding, under every chunking"}, checkEmbedded},
		{CheckInfo{"SIZE-001", MUST,
			"a stream shorter than its announced size is never benign",
			"unknown or an error"}, sizeCheck(+100)},
		{CheckInfo{"SIZE-002", MUST,
			"a stream longer than its announced size is never benign",
			"unknown or an error"}, sizeCheck(-10)},
		{CheckInfo{"LARGE-001", MUST,
			"a large file artifact is accepted",
			"a verdict (any), not a transport error, within the large-scan timeout"}, checkLarge},
		{CheckInfo{"URL-001", MUST,
			"a URL artifact is answered, or declared unsupported and never called benign",
			"a verdict when Info lists url; otherwise unknown or an error"}, checkURL},
		{CheckInfo{"CONFIG-002", MUST,
			"Configure is idempotent: the same config twice, then scans give the same verdicts",
			"both calls accepted, verdicts unchanged"}, checkConfigIdempotent},
		{CheckInfo{"CONFIG-003", MUST,
			"an unknown setting is rejected with a *shared.ConfigError that says what is wrong",
			"a ConfigError with a non-empty message"}, checkConfigUnknownSetting},
		{CheckInfo{"CONFIG-004", MUST,
			"a setting of the wrong type is rejected with a *shared.ConfigError that says what is wrong",
			"a ConfigError with a non-empty message"}, checkConfigWrongType},
		{CheckInfo{"CONFIG-005", SHOULD,
			"a config fault names the offending setting, so the host can point at its line in engine.hcl",
			"FieldError.Field (or the message) names the setting"}, checkConfigNamesField},
		{CheckInfo{"CONCURRENCY-001", MUST,
			fmt.Sprintf("%d concurrent scans give the same verdicts as serial ones", concurrentScans),
			"the serial verdicts, no errors"}, checkConcurrent},
		{CheckInfo{"CANCEL-001", MUST,
			"a scan cancelled mid-stream ends within 1 s, and the plugin stops the cancelled work",
			"the call returns within 1 s, not benign, and the next scan is answered promptly"}, checkCancel},
		{CheckInfo{"DEADLINE-001", MUST,
			"a scan whose deadline passes mid-stream is an error or unknown, never benign, and the plugin stops the work",
			"an error or unknown within 1 s of the deadline, and the next scan answered promptly"}, checkDeadline},
		{CheckInfo{"STDOUT-002", SHOULD,
			"the plugin writes nothing to stdout after the handshake either (log to stderr with shared.Logger)",
			"no stdout output during the run"}, checkStdoutAfterHandshake},
		{CheckInfo{"BACKEND-001", MUST,
			"after its backend becomes unreachable, the plugin reports unhealthy",
			"Health unhealthy within the backend timeout"}, checkBackendHealth},
		{CheckInfo{"BACKEND-002", MUST,
			"after its backend becomes unreachable, the plugin answers unknown, never benign",
			"unknown or an error for every scan"}, checkBackendScans},
	}
}

// --- handshake ---

func checkHandshake(ctx context.Context, e *env) outcome {
	if _, out, ok := e.session(ctx, stageHandshake); !ok {
		return out
	}
	lo := e.r.first
	return passf("dispensed in %s", lo.elapsed.Round(time.Millisecond))
}

// go-plugin's words for the failures the handshake checks tell apart.
var (
	versionMismatchRe = regexp.MustCompile(`incompatible API version with plugin\. Plugin version: (\d+), Client versions: \[([\d ]*)\]`)
	unrecognizedRe    = regexp.MustCompile(`Unrecognized remote plugin message: ([^\n]*)`)
)

const startTimeoutMsg = "timeout while waiting for plugin to start"

// firstLaunch makes sure a launch was attempted and returns how the first
// one went.
func (e *env) firstLaunch(ctx context.Context) *launchOutcome {
	if e.r.first == nil {
		_, _, _ = e.session(ctx, stageHandshake)
	}
	return e.r.first
}

func checkProtocolVersion(ctx context.Context, e *env) outcome {
	lo := e.firstLaunch(ctx)
	if lo == nil {
		return skipf("the plugin was never launched")
	}
	if lo.err != nil {
		if m := versionMismatchRe.FindStringSubmatch(lo.err.Error()); m != nil {
			return failf("the plugin serves plugin protocol version %s; the host speaks version %s (go-plugin: %v)",
				m[1], strings.TrimSpace(m[2]), lo.err)
		}
		return skipf("the handshake did not complete, so no version was negotiated (see HANDSHAKE-001)")
	}
	if lo.version != shared.ProtocolVersion || lo.protocol != plugin.ProtocolGRPC {
		return failf("negotiated protocol version %d over %s", lo.version, lo.protocol)
	}
	return passf("version %d over %s", lo.version, lo.protocol)
}

func checkStartTimeout(ctx context.Context, e *env) outcome {
	lo := e.firstLaunch(ctx)
	if lo == nil {
		return skipf("the plugin was never launched")
	}
	timeout := e.r.cfg.StartTimeout
	switch {
	case lo.err == nil:
		return passf("handshake after %s (start timeout %s)", lo.elapsed.Round(time.Millisecond), timeout)
	case strings.Contains(lo.err.Error(), startTimeoutMsg):
		// A plugin must reach shared.Serve at once: connecting to a slow
		// backend belongs in Configure or Health, not before Serve.
		return failf("no handshake line within the start timeout of %s; the host gave up after %s (%v). A plugin must call shared.Serve without delay and reach its backend later",
			timeout, lo.elapsed.Round(time.Millisecond), lo.err)
	case versionMismatchRe.MatchString(lo.err.Error()):
		return passf("a handshake line (of the wrong version) after %s", lo.elapsed.Round(time.Millisecond))
	}
	return skipf("the launch failed for another reason (see HANDSHAKE-001)")
}

func checkStdoutBeforeHandshake(ctx context.Context, e *env) outcome {
	lo := e.firstLaunch(ctx)
	if lo == nil {
		return skipf("the plugin was never launched")
	}
	if lo.err == nil || versionMismatchRe.MatchString(lo.err.Error()) {
		return passf("the first line on stdout was a handshake line")
	}
	if m := unrecognizedRe.FindStringSubmatch(lo.err.Error()); m != nil {
		return failf("the plugin wrote %q to stdout before its handshake line; go-plugin took it for the handshake and refused the plugin (Unrecognized remote plugin message). Log to stderr with shared.Logger, never to stdout", m[1])
	}
	return skipf("the launch failed for another reason (see HANDSHAKE-001)")
}

// --- info ---

// semverRe is semver.org's own pattern.
var semverRe = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

func checkInfo(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageInfo)
	if !ok {
		return out
	}
	info := s.pluginInfo
	var p problems
	switch {
	case info.Name == "":
		p.add("Info.Name is empty")
	case strings.ContainsAny(info.Name, " \t\r\n"):
		p.add("Info.Name %q contains whitespace", info.Name)
	}
	if !semverRe.MatchString(info.Version) {
		p.add("Info.Version %q is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0)", info.Version)
	}
	if len(info.ArtifactTypes) == 0 {
		p.add("Info.ArtifactTypes is empty (or holds no type the host knows: file, url)")
	}
	return p.outcome("%s %s, artifact types %v", info.Name, info.Version, info.ArtifactTypes)
}

func checkInfoVendor(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	// Ask again: the Info of the session was read before Configure.
	info, err := s.info(ctx)
	if err != nil {
		return failf("%v", err)
	}
	version, from := info.VendorVersion, "Info"
	if version == "" {
		if h, err := s.health(ctx); err == nil && h.VendorVersion != "" {
			version, from = h.VendorVersion, "Health"
		}
	}
	var p problems
	if info.Vendor == "" {
		p.add("Info.Vendor is empty")
	}
	if version == "" {
		p.add("neither Info.VendorVersion nor Health's vendor version is set")
	}
	return p.outcome("vendor %q, version %q (from %s)", info.Vendor, version, from)
}

// hclIdentRe is what HCL accepts as an attribute name.
var hclIdentRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

func checkConfigSchema(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageInfo)
	if !ok {
		return out
	}
	var p problems
	seen := map[string]bool{}
	for i, f := range s.pluginInfo.ConfigSchema {
		switch {
		case f.Name == "":
			p.add("field %d has no name", i)
			continue
		case !hclIdentRe.MatchString(f.Name):
			p.add("field %q is not a valid HCL attribute name", f.Name)
		case seen[f.Name]:
			p.add("field %q is declared twice", f.Name)
		}
		seen[f.Name] = true
		if err := checkDefault(f); err != nil {
			p.add("field %q: %v", f.Name, err)
		}
	}
	return p.outcome("settings: %d", len(s.pluginInfo.ConfigSchema))
}

// checkDefault checks that a field's type is known and its default parses
// as that type.
func checkDefault(f shared.ConfigField) error {
	var err error
	switch f.Type {
	case shared.FieldString:
		return nil
	case shared.FieldNumber:
		if f.Default != "" {
			_, err = strconv.ParseFloat(f.Default, 64)
		}
	case shared.FieldBool:
		if f.Default != "" {
			_, err = strconv.ParseBool(f.Default)
		}
	case shared.FieldDuration:
		if f.Default != "" {
			_, err = time.ParseDuration(f.Default)
		}
	case shared.FieldSize:
		if f.Default != "" {
			_, err = shared.ParseSize(f.Default)
		}
	case shared.FieldPath:
		return nil
	case shared.FieldList, shared.FieldPathList:
		if f.Default != "" {
			var l []string
			err = json.Unmarshal([]byte(f.Default), &l)
		}
	case shared.FieldMap:
		if f.Default != "" {
			var m map[string]any
			err = json.Unmarshal([]byte(f.Default), &m)
		}
	default:
		return fmt.Errorf("unknown type %q (want string, number, bool, duration, size, list, path, paths or map)", f.Type)
	}
	if err != nil {
		return fmt.Errorf("default %q is not a %s: %w", f.Default, f.Type, err)
	}
	return nil
}

func checkSamplesDeclared(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageInfo)
	if !ok {
		return out
	}
	var p problems
	var malicious, benign int
	for i, smp := range s.pluginInfo.Samples {
		name := smp.Name
		if name == "" {
			p.add("sample %d has no name", i)
			name = strconv.Itoa(i)
		}
		switch smp.Verdict {
		case shared.VerdictMalicious:
			malicious++
			if smp.MalwareFamily == "" {
				p.add("malicious sample %q declares no family", name)
			}
		case shared.VerdictBenign:
			benign++
		case shared.VerdictSuspicious:
		default:
			p.add("sample %q declares verdict %q, which vouches for nothing", name, smp.Verdict)
		}
	}
	if malicious == 0 {
		p.add("no malicious sample, so SCAN-002 and CHUNK-004 cannot check detection")
	}
	if benign == 0 {
		p.add("no benign sample")
	}
	return p.outcome("%d malicious, %d benign", malicious, benign)
}

// --- config and health ---

func checkConfigAccepted(ctx context.Context, e *env) outcome {
	if _, out, ok := e.session(ctx, stageConfigured); !ok {
		return out
	}
	return passf("accepted")
}

func checkHealthAnswers(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	var p problems
	if err := s.ping(); err != nil {
		p.add("%v", err)
	}
	start := time.Now()
	if _, err := s.health(ctx); err != nil {
		p.add("%v", err)
	}
	return p.outcome("Health answered in %s", elapsedSince(start))
}

func checkHealthy(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	h, err := s.health(ctx)
	switch {
	case err != nil:
		return failf("%v", err)
	case !h.Healthy:
		return failf("Health() reported unhealthy: %q", h.Message)
	}
	return passf("healthy: %q", h.Message)
}

// --- scans ---

func checkBenignSamples(ctx context.Context, e *env) outcome {
	s, out, ok := e.fileSession(ctx)
	if !ok {
		return out
	}
	var p problems
	n := 0
	for _, it := range e.samples(s) {
		if it.want != shared.VerdictBenign {
			continue
		}
		n++
		a := e.scanBytes(ctx, s, nil, "Scan("+it.name+")", it.content)
		if a.err != nil || a.res.Verdict != shared.VerdictBenign {
			p.add("sample %q: %s", it.name, a)
		}
		if s.broken() {
			break
		}
	}
	return p.outcome("benign samples: %d, all benign", n)
}

func checkPositiveSamples(ctx context.Context, e *env) outcome {
	s, out, ok := e.fileSession(ctx)
	if !ok {
		return out
	}
	var p problems
	n := 0
	for _, it := range e.samples(s) {
		if it.want == shared.VerdictBenign {
			continue
		}
		n++
		a := e.scanBytes(ctx, s, nil, "Scan("+it.name+")", it.content)
		switch {
		case a.err != nil || a.res.Verdict != it.want:
			p.add("sample %q, declared %s: %s", it.name, it.want, a)
		case it.want != shared.VerdictMalicious:
		case it.family != "" && a.res.MalwareFamily != it.family:
			p.add("sample %q: family %q, declared %q", it.name, a.res.MalwareFamily, it.family)
		case a.res.MalwareFamily == "":
			p.add("sample %q: malicious without a malware family (the marketplace requires malware_family)", it.name)
		}
		if s.broken() {
			break
		}
	}
	if n == 0 {
		return noPositive()
	}
	return p.outcome("samples: %d, all detected", n)
}

func (e *env) scanEmpty(ctx context.Context) (answer, outcome, bool) {
	s, out, ok := e.fileSession(ctx)
	if !ok {
		return answer{}, out, false
	}
	return e.scanBytes(ctx, s, nil, "Scan(empty file)", nil), outcome{}, true
}

func checkEmptyAnswered(ctx context.Context, e *env) outcome {
	a, out, ok := e.scanEmpty(ctx)
	if !ok {
		return out
	}
	if a.err != nil || a.res.Verdict == shared.VerdictMalicious {
		return failf("%s", a)
	}
	return passf("%s", a)
}

func checkEmptyBenign(ctx context.Context, e *env) outcome {
	a, out, ok := e.scanEmpty(ctx)
	if !ok {
		return out
	}
	if a.err != nil || a.res.Verdict != shared.VerdictBenign {
		return failf("%s", a)
	}
	return passf("%s", a)
}

func checkUnknownSize(ctx context.Context, e *env) outcome {
	s, out, ok := e.fileSession(ctx)
	if !ok {
		return out
	}
	var p problems
	items := e.samples(s)
	for _, it := range items {
		base := e.scanBytes(ctx, s, nil, "Scan("+it.name+")", it.content)
		a := fileArtifact(e.id+"/"+it.name, it.content)
		a.Size = -1
		res, err := s.scan(ctx, "Scan("+it.name+", size not announced)", nil, a, e.r.cfg.CallTimeout)
		got := answer{res, err}
		if !got.same(base) {
			p.add("sample %q: %s with the size announced, %s without", it.name, base, got)
		}
		if s.broken() {
			break
		}
	}
	return p.outcome("samples: %d, same verdicts", len(items))
}

// oddChunkLimit keeps 1- and 3-byte chunkings to samples they can stream
// in well under a second.
const oddChunkLimit = 64 << 10

// chunkCheck compares each sample's verdict under n-byte chunks with its
// verdict under the default chunking. The samples are sent as they are:
// clamd, for one, matches EICAR by hash, so only the exact file matches.
func chunkCheck(n int) func(context.Context, *env) outcome {
	return func(ctx context.Context, e *env) outcome {
		s, out, ok := e.fileSession(ctx)
		if !ok {
			return out
		}
		items := e.samples(s)
		if n >= 1<<20 {
			// A chunk size only shows when the artifact is larger than it.
			items = append(items, item{name: "2.5 MiB noise", content: noise(5<<19+17, 11)})
		}
		var p problems
		count := 0
		for _, it := range items {
			if n < 1<<10 && len(it.content) > oddChunkLimit {
				continue
			}
			count++
			base := e.scanBytes(ctx, s, nil, "Scan("+it.name+")", it.content)
			got := e.scanBytes(ctx, s, s.chunked(n), fmt.Sprintf("Scan(%s, %s chunks)", it.name, chunkName(n)), it.content)
			if !got.same(base) {
				p.add("%q: %s with %s chunks, %s with %s chunks", it.name, got, chunkName(n), base, chunkName(0))
			}
			if s.broken() {
				break
			}
		}
		return p.outcome("artifacts: %d, same verdicts", count)
	}
}

func checkEmbedded(ctx context.Context, e *env) outcome {
	s, out, ok := e.fileSession(ctx)
	if !ok {
		return out
	}
	positives := e.positives(s)
	if len(positives) == 0 {
		return noPositive()
	}
	type embedding struct {
		name      string
		content   []byte
		chunkings []int
	}
	var p problems
	var seen []string
	for _, it := range positives {
		if len(it.content) > oddChunkLimit {
			continue
		}
		half := len(it.content) / 2
		embeddings := []embedding{
			// Odd offsets in a small file: every 1- and 3-byte boundary
			// falls inside the sample.
			{"in 8 KiB at offset 4093", embed(it.content, 8<<10, 4093, 3), []int{0, 1, 3}},
			// Straddling 1 MiB, which is a boundary of the default and
			// the 1 MiB chunkings, and near one of 65537- and 4093-byte
			// chunks too.
			{fmt.Sprintf("in 1.06 MiB at offset %d", 1<<20-half), embed(it.content, 1<<20+64<<10, 1<<20-half, 5), []int{0, shared.MaxChunkSize, 65537, 4093}},
		}
		for _, em := range embeddings {
			var first answer
			verdicts := []string{}
			for i, n := range em.chunkings {
				what := fmt.Sprintf("Scan(%s %s, %s chunks)", it.name, em.name, chunkName(n))
				a := e.scanBytes(ctx, s, s.chunked(n), what, em.content)
				if a.err != nil {
					p.add("%v", a.err)
					continue
				}
				if i == 0 {
					first = a
				} else if !a.same(first) {
					p.add("%s %s: %s with %s chunks, %s with %s chunks", it.name, em.name, a, chunkName(n), first, chunkName(0))
				}
				verdicts = append(verdicts, string(a.res.Verdict))
				if s.broken() {
					return p.outcome("")
				}
			}
			seen = append(seen, fmt.Sprintf("%s %s: %s", it.name, em.name, strings.Join(verdicts, "/")))
		}
	}
	if len(seen) == 0 && len(p) == 0 {
		return skipf("every malicious sample is larger than %s", sizeName(oddChunkLimit))
	}
	return p.outcome("%s", strings.Join(seen, "; "))
}

// sizeCheck announces len+delta bytes and sends len: a truncated
// (delta > 0) or overlong (delta < 0) stream.
func sizeCheck(delta int64) func(context.Context, *env) outcome {
	return func(ctx context.Context, e *env) outcome {
		s, out, ok := e.fileSession(ctx)
		if !ok {
			return out
		}
		content := builtinBenign().Content
		a := fileArtifact(e.id, content)
		a.Size = int64(len(content)) + delta
		what := fmt.Sprintf("Scan(%d bytes announced as %d)", len(content), a.Size)
		res, err := s.scan(ctx, what, nil, a, e.r.cfg.CallTimeout)
		got := answer{res, err}
		if err == nil && res.Verdict != shared.VerdictUnknown {
			return failf("%s: %s; a verdict is a claim that the whole artifact, as announced, was examined", what, got)
		}
		return passf("%s", got)
	}
}

func checkLarge(ctx context.Context, e *env) outcome {
	s, out, ok := e.fileSession(ctx)
	if !ok {
		return out
	}
	size := e.r.cfg.LargeSize
	a := shared.Artifact{
		ID:      e.id,
		Type:    shared.ArtifactFile,
		Size:    size,
		Content: newNoiseReader(size, uint64(time.Now().UnixNano())),
	}
	what := fmt.Sprintf("Scan(%s of noise)", sizeName(int(size)))
	start := time.Now()
	res, err := s.scan(ctx, what, nil, a, e.r.cfg.LargeTimeout)
	took := time.Since(start)
	if err != nil {
		return failf("%v", err)
	}
	return passf("%s in %s (%.0f MB/s)", describe(res), took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6)
}

func checkURL(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	url := []byte("https://conformance.microengine.invalid/sample")
	a := shared.Artifact{ID: e.id, Type: shared.ArtifactURL, Size: int64(len(url)), Content: strings.NewReader(string(url))}
	res, err := s.scan(ctx, "Scan(url artifact)", nil, a, e.r.cfg.CallTimeout)
	got := answer{res, err}
	if s.pluginInfo.Supports(shared.ArtifactURL) {
		if err != nil {
			return failf("Info lists url, but: %v", err)
		}
		return passf("Info lists url; got %s", got)
	}
	if err == nil && res.Verdict != shared.VerdictUnknown {
		return failf("Info does not list url, yet the plugin answered %s; an unsupported artifact is unknown", got)
	}
	return passf("unsupported; got %s", got)
}

// --- configuration ---

// serialVerdicts scans every sample once with the default chunking.
func (e *env) serialVerdicts(ctx context.Context, s *session, items []item, label string) []answer {
	out := make([]answer, len(items))
	for i, it := range items {
		out[i] = e.scanBytes(ctx, s, nil, fmt.Sprintf("Scan(%s%s)", it.name, label), it.content)
	}
	return out
}

func checkConfigIdempotent(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	raw := e.r.pluginConfig
	var items []item
	if s.pluginInfo.Supports(shared.ArtifactFile) {
		items = e.samples(s)
	}
	before := e.serialVerdicts(ctx, s, items, "")
	var p problems
	for i := 1; i <= 2; i++ {
		if err := s.configure(ctx, fmt.Sprintf("Configure(the suite's config, #%d)", i), raw); err != nil {
			p.add("%v", err)
		}
	}
	after := e.serialVerdicts(ctx, s, items, ", after reconfiguring")
	for i := range items {
		if !after[i].same(before[i]) {
			p.add("sample %q: %s before, %s after", items[i].name, before[i], after[i])
		}
	}
	return p.outcome("accepted twice; %d verdicts unchanged", len(items))
}

// badConfig is a config the plugin must reject, and the setting at fault.
type badConfig struct {
	what  string
	field string
	raw   []byte
}

const unknownSetting = "no_such_setting_xyz"

func (e *env) unknownSettingConfig() (badConfig, error) {
	raw, err := withSetting(e.r.pluginConfig, unknownSetting, "1")
	return badConfig{"an unknown setting " + unknownSetting, unknownSetting, raw}, err
}

// wrongTypeConfig sets the first declared setting to a value of another
// type; ok is false when the plugin declares no settings.
func (e *env) wrongTypeConfig(s *session) (badConfig, bool, error) {
	if len(s.pluginInfo.ConfigSchema) == 0 {
		return badConfig{}, false, nil
	}
	f := s.pluginInfo.ConfigSchema[0]
	var value string
	switch f.Type {
	case shared.FieldString:
		value = `12345`
	case shared.FieldNumber:
		value = `"not a number"`
	case shared.FieldBool:
		value = `"not a bool"`
	default: // durations and sizes arrive as strings and integers
		value = `{"not": "a scalar"}`
	}
	raw, err := withSetting(e.r.pluginConfig, f.Name, value)
	return badConfig{fmt.Sprintf("%s (a %s) set to %s", f.Name, f.Type, value), f.Name, raw}, true, err
}

// rejectConfig applies bad and expects a *shared.ConfigError; then it puts
// the suite's config back so later checks are unaffected.
func (e *env) rejectConfig(ctx context.Context, s *session, bad badConfig) (*shared.ConfigError, outcome, bool) {
	err := s.configure(ctx, "Configure("+bad.what+")", bad.raw)
	restore := s.configure(ctx, "Configure(the suite's config, after a rejected one)", e.r.pluginConfig)
	var ce *shared.ConfigError
	switch {
	case err == nil:
		return nil, failf("Configure accepted %s: a typo in engine.hcl would pass silently", bad.what), false
	case !errors.As(err, &ce):
		return nil, failf("the call failed instead of returning a *shared.ConfigError: %v", err), false
	case restore != nil:
		s.taint("the suite's config could not be restored")
		return nil, failf("the fault was reported, but then %v", restore), false
	}
	for _, f := range ce.Fields {
		if strings.TrimSpace(f.Message) == "" {
			return nil, failf("rejected %s without a message: %v", bad.what, ce), false
		}
	}
	if len(ce.Fields) == 0 {
		return nil, failf("rejected %s with an empty ConfigError", bad.what), false
	}
	return ce, outcome{}, true
}

func checkConfigUnknownSetting(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	bad, err := e.unknownSettingConfig()
	if err != nil {
		return failf("%v", err)
	}
	ce, out, ok := e.rejectConfig(ctx, s, bad)
	if !ok {
		return out
	}
	return passf("rejected: %v", ce)
}

func checkConfigWrongType(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	bad, ok, err := e.wrongTypeConfig(s)
	switch {
	case err != nil:
		return failf("%v", err)
	case !ok:
		return skipf("the plugin declares no settings, so none can have the wrong type (CONFIG-003 covers unknown ones)")
	}
	ce, out, ok := e.rejectConfig(ctx, s, bad)
	if !ok {
		return out
	}
	return passf("rejected %s: %v", bad.what, ce)
}

func checkConfigNamesField(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	bads := []badConfig{}
	bad, err := e.unknownSettingConfig()
	if err != nil {
		return failf("%v", err)
	}
	bads = append(bads, bad)
	if bad, ok, err := e.wrongTypeConfig(s); err != nil {
		return failf("%v", err)
	} else if ok {
		bads = append(bads, bad)
	}
	var p problems
	for _, bad := range bads {
		ce, out, ok := e.rejectConfig(ctx, s, bad)
		if !ok {
			p.add("%s: %s", bad.what, out.actual)
			continue
		}
		named := false
		for _, f := range ce.Fields {
			if f.Field == bad.field || strings.Contains(f.Message, bad.field) {
				named = true
			}
		}
		if !named {
			p.add("the fault in %s does not name %q: %v", bad.what, bad.field, ce)
		}
	}
	return p.outcome("faults naming their setting: %d", len(bads))
}

// withSetting returns the config object raw with name set to the JSON
// value.
func withSetting(raw []byte, name, value string) ([]byte, error) {
	m, err := configObject(raw)
	if err != nil {
		return nil, fmt.Errorf("the suite's config: %w", err)
	}
	m[name] = []byte(value)
	return marshalConfig(m)
}
