package conformance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/microengine/microengine/shared"
)

// Artifacts by reference: a plugin that declares Info.ByReference gets
// open read-only descriptors instead of streams. The other checks stream
// (their artifacts are no files), so both paths are checked for such a
// plugin; a plugin that does not declare it is streamed everywhere.

// byReferenceSession is a file session with a plugin that declares
// ByReference, and a folder for the artifact files.
func (e *env) byReferenceSession(ctx context.Context) (*session, string, outcome, bool) {
	s, out, ok := e.fileSession(ctx)
	if !ok {
		return nil, "", out, false
	}
	if !s.pluginInfo.ByReference {
		return nil, "", skipf("the plugin does not declare Info.ByReference: artifacts are streamed (the other checks)"), false
	}
	if !s.scanner.ByReference() {
		return nil, "", failf("Info declares ByReference, but the plugin's descriptor socket (%s in its socket directory) cannot be reached", shared.DescriptorSocketName), false
	}
	dir, err := os.MkdirTemp("", "conformance-ref-")
	if err != nil {
		return nil, "", failf("cannot make a folder for artifact files: %v", err), false
	}
	return s, dir, outcome{}, true
}

// fileOf writes content to a new file in dir, opened read-write as a
// host's download spool is: the host must still pass it read-only.
func fileOf(dir, name string, content []byte) (*os.File, error) {
	f, err := os.CreateTemp(dir, "artifact-")
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	return f, nil
}

// scanFile scans content by reference.
func (e *env) scanFile(ctx context.Context, s *session, dir, what string, content []byte, timeout time.Duration) answer {
	f, err := fileOf(dir, what, content)
	if err != nil {
		return answer{err: err}
	}
	defer f.Close()
	a := fileArtifact(e.id+"/"+what, content)
	a.File = f
	res, err := s.scan(ctx, what, nil, a, timeout)
	return answer{res, err}
}

func checkByReference(ctx context.Context, e *env) outcome {
	s, dir, out, ok := e.byReferenceSession(ctx)
	if !ok {
		return out
	}
	defer os.RemoveAll(dir)
	items := append(e.samples(s),
		item{name: "empty file"},
		item{name: "512 KiB noise", content: noise(512<<10, 17)})
	streamed := s.scanner.WithoutDescriptors()
	var p problems
	for _, it := range items {
		byRef := e.scanFile(ctx, s, dir, "Scan("+it.name+", by reference)", it.content, e.r.cfg.CallTimeout)
		stream := e.scanBytes(ctx, s, streamed, "Scan("+it.name+", streamed)", it.content)
		switch {
		case byRef.err != nil:
			p.add("%q by reference: %v", it.name, byRef.err)
		case !byRef.same(stream):
			p.add("%q: %s by reference, %s streamed", it.name, byRef, stream)
		case it.want != "" && byRef.res.Verdict != it.want:
			p.add("%q by reference: %s, declared %s", it.name, byRef, it.want)
		}
		if s.broken() {
			break
		}
	}
	return p.outcome("%d artifacts: the same verdicts by reference as streamed", len(items))
}

// checkByReferenceDescriptors scans by reference under load, with some
// scans cut short by their deadline, then looks in /proc at the plugin
// process: it must hold no descriptor of any artifact once answered.
func checkByReferenceDescriptors(ctx context.Context, e *env) outcome {
	if runtime.GOOS != "linux" {
		return skipf("descriptors are looked up in /proc, which this system does not have")
	}
	s, dir, out, ok := e.byReferenceSession(ctx)
	if !ok {
		return out
	}
	defer os.RemoveAll(dir)
	rc := s.client.ReattachConfig()
	if rc == nil || rc.Pid <= 0 {
		return failf("the plugin's pid is not known")
	}
	items := append(e.samples(s), item{name: "2 MiB noise", content: noise(2<<20, 19)})
	var wg sync.WaitGroup
	errs := make([]error, concurrentScans)
	for i := range concurrentScans {
		wg.Go(func() {
			it := items[i%len(items)]
			what := fmt.Sprintf("Scan(%s, by reference #%d)", it.name, i+1)
			if i%4 != 3 {
				errs[i] = e.scanFile(ctx, s, dir, what, it.content, e.r.cfg.CallTimeout).err
				return
			}
			// Cut short: the deadline passes while the plugin scans, or
			// before it starts. Called past the session's bookkeeping,
			// which would take the expired deadline for a stuck plugin.
			f, err := fileOf(dir, what, it.content)
			if err != nil {
				errs[i] = err
				return
			}
			defer f.Close()
			a := fileArtifact(e.id+"/"+what, it.content)
			a.File = f
			sctx, cancel := context.WithTimeout(ctx, time.Duration(1+i%3)*time.Millisecond)
			defer cancel()
			_, _ = s.scanner.Scan(sctx, a)
		})
	}
	wg.Wait()
	var p problems
	for _, err := range errs {
		if err != nil {
			p.add("%v", err)
		}
	}
	// The plugin closes a descriptor once it has answered, or once it has
	// seen the cancel: allow it a moment.
	var held []string
	deadline := time.Now().Add(2 * time.Second)
	for {
		held = descriptorsUnder(rc.Pid, dir)
		if len(held) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(held) > 0 {
		p.add("the plugin (pid %d) still holds %d descriptor(s) of artifacts it has answered: %s", rc.Pid, len(held), strings.Join(held, ", "))
	}
	return p.outcome("%d scans by reference (%d cut short by their deadline); no descriptor left open in the plugin", concurrentScans, concurrentScans/4)
}

// descriptorsUnder lists pid's descriptors open on files in dir.
func descriptorsUnder(pid int, dir string) []string {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, ent := range entries {
		target, err := os.Readlink(filepath.Join(fdDir, ent.Name()))
		if err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			out = append(out, ent.Name()+" → "+target)
		}
	}
	return out
}
