package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/devclamd"
	"github.com/microengine/microengine/plugins/clamav/scanner"
	"github.com/microengine/microengine/shared"
)

func fileArtifact(content []byte) shared.Artifact {
	return shared.Artifact{ID: "t", Type: shared.ArtifactFile, Size: int64(len(content)), Content: bytes.NewReader(content)}
}

func scanOver(t *testing.T, s *shared.GRPCClient, a shared.Artifact) shared.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := s.Scan(ctx, a)
	if err != nil {
		t.Fatalf("Scan over gRPC: %v", err)
	}
	return r
}

// TestPluginBinary drives the built plugin over go-plugin's gRPC, as the
// host does, against a private clamd.
func TestPluginBinary(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{})
	p := launch(t)
	s := p.scanner
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("config faults name their fields", func(t *testing.T) {
		err := s.Configure(ctx, []byte(`{"address":"nowhere","timeout":"soon","colour":"red"}`))
		var ce *shared.ConfigError
		if !errors.As(err, &ce) {
			t.Fatalf("Configure = %v, want a *shared.ConfigError", err)
		}
		got := map[string]bool{}
		for _, f := range ce.Fields {
			got[f.Field] = true
		}
		if !got["address"] || !got["timeout"] || !got["colour"] || len(got) != 3 {
			t.Errorf("faults in %v, want address, timeout and colour", ce.Fields)
		}
	})

	configure(t, s, fmt.Sprintf(`{"address":%q,"max_stream_size":"1M"}`, d.Address()))

	t.Run("Info and Health", func(t *testing.T) {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Name != "clamav" || info.Version != scanner.Version || info.VendorVersion == "" || !info.HasBackend ||
			!info.Supports(shared.ArtifactFile) || info.Supports(shared.ArtifactURL) || len(info.ConfigSchema) != len(scanner.ConfigSchema()) {
			t.Errorf("Info = %+v", info)
		}
		h, err := s.Health(ctx)
		if err != nil || !h.Healthy || h.VendorVersion != info.VendorVersion {
			t.Errorf("Health = %+v, %v", h, err)
		}
	})

	t.Run("samples under every chunking", func(t *testing.T) {
		for _, sample := range scanner.Samples() {
			for _, n := range []int{1, 3, 64 << 10, shared.MaxChunkSize} {
				r := scanOver(t, s.WithChunkSize(n), fileArtifact(sample.Content))
				if r.Verdict != sample.Verdict || r.MalwareFamily != sample.MalwareFamily {
					t.Errorf("%s in %d-byte chunks: %+v, want %s %q", sample.Name, n, r, sample.Verdict, sample.MalwareFamily)
				}
				if r.Metadata[scanner.MetaVendorVersion] == "" {
					t.Errorf("%s: metadata %v lacks %s", sample.Name, r.Metadata, scanner.MetaVendorVersion)
				}
			}
		}
	})

	t.Run("empty file is benign", func(t *testing.T) {
		if r := scanOver(t, s, fileArtifact(nil)); r.Verdict != shared.VerdictBenign {
			t.Errorf("%+v", r)
		}
	})

	t.Run("over max_stream_size is unknown", func(t *testing.T) {
		big := bytes.Repeat([]byte("a"), 1<<20+1)
		r := scanOver(t, s, fileArtifact(big))
		if r.Verdict != shared.VerdictUnknown || !strings.Contains(r.Reason, "max_stream_size") {
			t.Errorf("announced: %+v", r)
		}
		a := fileArtifact(big)
		a.Size = -1
		if r := scanOver(t, s, a); r.Verdict != shared.VerdictUnknown {
			t.Errorf("unannounced: %+v", r)
		}
	})

	t.Run("short stream is never benign", func(t *testing.T) {
		a := fileArtifact([]byte("hello"))
		a.Size = 100
		r, err := s.Scan(ctx, a)
		if err == nil && r.Verdict == shared.VerdictBenign {
			t.Errorf("a stream 95 bytes short of its size was answered %+v", r)
		}
	})

	t.Run("cancelled scan returns promptly", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		time.AfterFunc(300*time.Millisecond, ccancel)
		type outcome struct {
			r   shared.Result
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			r, err := s.Scan(cctx, shared.Artifact{ID: "endless", Type: shared.ArtifactFile, Size: -1, Content: &trickle{ctx: cctx}})
			done <- outcome{r, err}
		}()
		// Milliseconds when the cancel is honoured; held to 10 s, not to
		// 1 s past the cancel, which left a loaded machine no room.
		var r shared.Result
		var err error
		select {
		case o := <-done:
			r, err = o.r, o.err
		case <-time.After(10 * time.Second):
			t.Fatal("still scanning 10s after the cancel")
		}
		if err == nil && r.Verdict == shared.VerdictBenign {
			t.Errorf("a cancelled scan was answered %+v", r)
		}
		// The plugin is still fine.
		if r := scanOver(t, s, fileArtifact(scanner.EICAR())); r.Verdict != shared.VerdictMalicious {
			t.Errorf("after a cancel: %+v", r)
		}
	})

	t.Run("clamd gone", func(t *testing.T) {
		d.Kill()
		if r := scanOver(t, s, fileArtifact([]byte("hello"))); r.Verdict != shared.VerdictUnknown {
			t.Errorf("scan with clamd dead: %+v, want unknown", r)
		}
		if h, err := s.Health(ctx); err != nil || h.Healthy {
			t.Errorf("Health with clamd dead = %+v, %v; want unhealthy", h, err)
		}
	})
}

// trickle is an endless stream that yields 4 KiB every few milliseconds
// until its context ends, like an artifact still being downloaded.
type trickle struct{ ctx context.Context }

func (r *trickle) Read(p []byte) (int, error) {
	select {
	case <-r.ctx.Done():
		return 0, r.ctx.Err()
	case <-time.After(2 * time.Millisecond):
	}
	n := min(len(p), 4096)
	clear(p[:n])
	return n, nil
}

var _ io.Reader = (*trickle)(nil)

// TestStoppedClamdDoesNotHangThePlugin stops clamd (SIGSTOP) with scans in
// flight. The scans must end unknown at their timeout, and Health must
// answer unhealthy within a fraction of the host's 10 s deadline, as a
// plugin that answers is not hung: the host kills a plugin whose Health
// overruns, cutting every scan it holds.
func TestStoppedClamdDoesNotHangThePlugin(t *testing.T) {
	d := devclamd.StartT(t, devclamd.Options{})
	p := launch(t)
	s := p.scanner
	configure(t, s, fmt.Sprintf(`{"address":%q,"timeout":"3s"}`, d.Address()))
	if r := scanOver(t, s, fileArtifact(scanner.EICAR())); r.Verdict != shared.VerdictMalicious {
		t.Fatalf("before the stop: %+v", r)
	}

	if err := syscall.Kill(d.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(d.Pid(), syscall.SIGCONT)
		}
	}
	defer resume()

	const scans = 8
	results := make(chan shared.Result, scans)
	for i := range scans {
		go func() {
			content := append([]byte(fmt.Sprintf("artifact %d ", i)), bytes.Repeat([]byte("x"), 200<<10)...)
			results <- scanOver(t, s, fileArtifact(content))
		}()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	h, err := s.Health(ctx)
	elapsed := time.Since(start)
	if err != nil || h.Healthy {
		t.Errorf("Health with clamd stopped = %+v, %v; want unhealthy", h, err)
	}
	// Its budget is 2 s; a Health that waited for the stopped clamd would
	// take the host's whole 10 s. 6 s leaves a loaded machine room (3 s
	// left it 1 s) and still fails the latter.
	if elapsed > 6*time.Second {
		t.Errorf("Health took %s with clamd stopped; the host's deadline is 10s", elapsed.Round(time.Millisecond))
	}
	for range scans {
		if r := <-results; r.Verdict != shared.VerdictUnknown {
			t.Errorf("scan while clamd was stopped: %+v, want unknown", r)
		}
	}

	resume()
	if r := scanOver(t, s, fileArtifact(scanner.EICAR())); r.Verdict != shared.VerdictMalicious {
		t.Errorf("after SIGCONT: %+v", r)
	}
	if h, err := s.Health(ctx); err != nil || !h.Healthy {
		t.Errorf("Health after SIGCONT = %+v, %v; want healthy", h, err)
	}
}

// TestManagedClamdDiesWithThePlugin: the clamd a plugin runs for
// `database` goes when the plugin is killed (SIGKILL, as a host gives up
// on it): no orphan clamd.
func TestManagedClamdDiesWithThePlugin(t *testing.T) {
	sigs, err := devclamd.RepoSignatureDir()
	if err != nil {
		t.Fatal(err)
	}
	p := launch(t)
	configure(t, p.scanner, fmt.Sprintf(`{"database":%q}`, sigs))
	if r := scanOver(t, p.scanner, fileArtifact(scanner.EICAR())); r.Verdict != shared.VerdictMalicious {
		t.Fatalf("EICAR through the managed clamd: %+v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := p.scanner.Health(ctx)
	if err != nil || !h.Healthy {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	var pid int
	if _, err := fmt.Sscanf(h.Message[strings.Index(h.Message, "(pid "):], "(pid %d,", &pid); err != nil || pid <= 0 {
		t.Fatalf("no clamd pid in %q: %v", h.Message, err)
	}
	if err := syscall.Kill(p.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("clamd %d outlived its plugin by 10s", pid)
		}
		time.Sleep(20 * time.Millisecond) // polling the process table: there is nothing to wait on
	}
}

// alive reports whether pid runs (a zombie, dead but not reaped, does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}

// TestManagedClamdStopsWithThePlugin: when the host asks the plugin to
// exit, the plugin stops its clamd and removes the clamd's folder.
func TestManagedClamdStopsWithThePlugin(t *testing.T) {
	sigs, err := devclamd.RepoSignatureDir()
	if err != nil {
		t.Fatal(err)
	}
	p := launch(t)
	configure(t, p.scanner, fmt.Sprintf(`{"database":%q}`, sigs))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := p.scanner.Health(ctx)
	if err != nil || len(h.Backends) != 1 || !strings.HasPrefix(h.Backends[0].Name, "unix://") {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	dir := filepath.Dir(strings.TrimPrefix(h.Backends[0].Name, "unix://"))
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the managed clamd's folder: %v", err)
	}
	p.client.Kill() // graceful first, as the host stops its plugins
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the managed clamd's folder %s is still there after the plugin exited: %v", dir, err)
	}
}
