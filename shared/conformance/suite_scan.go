package conformance

// Checks of scans: SCAN, CHUNK, SIZE, LARGE and URL checks.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/microengine/microengine/shared"
)

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
