package shared

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"
	gproto "google.golang.org/protobuf/proto"

	"github.com/microengine/microengine/shared/proto"
)

// connectByReference is connect with the descriptor socket served in
// process, as Serve does in a plugin launched by a host.
func connectByReference(t testing.TB, impl Scanner) *GRPCClient {
	t.Helper()
	c := connect(t, impl)
	path := filepath.Join(shortTempDir(t), DescriptorSocketName)
	ln, err := serveDescriptors(path, impl, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c.fds.path = path
	c.fds.declare(true)
	return c
}

// shortTempDir is a temp folder whose socket paths fit in sun_path.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// artifactFile writes content to a new file opened read-write, as the
// marketplace's spool is.
func artifactFile(t testing.TB, content []byte) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "artifact"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(content); err != nil {
		t.Fatal(err)
	}
	return f
}

// openDescriptorsOf counts this process's descriptors open on path,
// through /proc (host and plugin share the process in these tests).
func openDescriptorsOf(t *testing.T, path string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

func TestByReferenceThePluginReadsTheFileItself(t *testing.T) {
	content := bytes.Repeat([]byte("by reference "), 1000)
	f := artifactFile(t, content)
	type seen struct {
		file                *os.File
		viaContent, viaFile []byte
		sha                 string
		size                int64
		accessMode          int
		writeErr            error
	}
	got := make(chan seen, 1)
	c := connectByReference(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		s := seen{file: a.File, sha: a.SHA256, size: a.Size}
		if a.File != nil {
			s.viaContent, _ = io.ReadAll(a.Content)
			s.viaFile, _ = io.ReadAll(a.File) // moves the plugin's own offset
			flags, _ := unix.FcntlInt(a.File.Fd(), unix.F_GETFL, 0)
			s.accessMode = flags & unix.O_ACCMODE
			_, s.writeErr = a.File.WriteAt([]byte("x"), 0)
		}
		got <- s
		return Result{Verdict: VerdictBenign, Confidence: 1}, nil
	}})
	if _, err := f.Seek(7, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	res, err := c.Scan(context.Background(), Artifact{
		ID: "a", Type: ArtifactFile, Size: int64(len(content)), SHA256: "abc",
		File: f, Content: strings.NewReader("the stream must not be read"),
	})
	if err != nil || res.Verdict != VerdictBenign {
		t.Fatalf("scan: %+v, %v", res, err)
	}
	s := <-got
	if s.file == nil {
		t.Fatal("the plugin got no file: the artifact was streamed")
	}
	if !bytes.Equal(s.viaContent, content) || !bytes.Equal(s.viaFile, content) {
		t.Fatalf("the plugin read %d bytes through Content and %d through File, want %d", len(s.viaContent), len(s.viaFile), len(content))
	}
	if s.sha != "abc" || s.size != int64(len(content)) {
		t.Fatalf("sha256 %q size %d reached the plugin", s.sha, s.size)
	}
	if s.accessMode != unix.O_RDONLY || s.writeErr == nil {
		t.Fatalf("the plugin's descriptor has access mode %d and a write gave %v: want read-only", s.accessMode, s.writeErr)
	}
	if off, _ := f.Seek(0, io.SeekCurrent); off != 7 {
		t.Fatalf("the host's file offset moved to %d: the plugin shares it", off)
	}
	after, _ := os.ReadFile(f.Name())
	if !bytes.Equal(after, content) {
		t.Fatal("the artifact changed")
	}
}

func TestByReferenceFallsBackToTheStream(t *testing.T) {
	content := []byte("streamed instead")
	var files []bool
	var mu sync.Mutex
	impl := &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		mu.Lock()
		files = append(files, a.File != nil)
		mu.Unlock()
		return readAllBenign(ctx, a)
	}}
	f := artifactFile(t, content)
	scan := func(c *GRPCClient, size int64) {
		t.Helper()
		res, err := c.Scan(context.Background(), Artifact{ID: "a", Type: ArtifactFile, Size: size, File: f, Content: io.NewSectionReader(f, 0, int64(len(content)))})
		if err != nil {
			t.Fatal(err)
		}
		if size == int64(len(content)) && res.Verdict != VerdictBenign {
			t.Fatalf("streamed scan: %+v", res)
		}
	}

	// Not declared (an older plugin): streamed.
	c := connectByReference(t, impl)
	c.fds.declare(false)
	scan(c, int64(len(content)))
	// Declared, but a copy made to stream (the conformance suite's).
	c.fds.declare(true)
	scan(c.WithoutDescriptors(), int64(len(content)))
	// The file does not hold the announced size: streamed, and the stream's
	// own guard judges it.
	scan(c, int64(len(content))+1)
	// Declared but nobody listens: streamed, and from then on.
	gone := connect(t, impl)
	gone.fds.path = filepath.Join(shortTempDir(t), DescriptorSocketName)
	gone.fds.declare(true)
	scan(gone, int64(len(content)))
	if gone.ByReference() {
		t.Fatal("a missing descriptor socket still counts as usable")
	}
	// And a pipe is no regular file.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() { w.Write(content); w.Close() }()
	if res, err := c.Scan(context.Background(), Artifact{ID: "p", Type: ArtifactFile, Size: int64(len(content)), File: r, Content: r}); err != nil || res.Verdict != VerdictBenign {
		t.Fatalf("pipe: %+v %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, byRef := range files {
		if byRef {
			t.Fatalf("scan %d went by reference: %v", i, files)
		}
	}
	if len(files) != 5 {
		t.Fatalf("%d scans reached the plugin, want 5", len(files))
	}
}

// Under load, after cancels and after a plugin that drops connections,
// neither side keeps a descriptor of the artifact.
func TestByReferenceDescriptorsAreClosedOnEveryPath(t *testing.T) {
	content := bytes.Repeat([]byte{7}, 64<<10)
	f := artifactFile(t, content)
	path := f.Name()
	base := openDescriptorsOf(t, path) // the test's own
	block := make(chan struct{})
	c := connectByReference(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		switch a.ID {
		case "block":
			select {
			case <-block:
			case <-ctx.Done():
				return Result{}, ctx.Err()
			}
		case "panic-free-error":
			return Result{}, errors.New("backend on fire")
		}
		return readAllBenign(ctx, a)
	}})
	art := func(id string) Artifact {
		return Artifact{ID: id, Type: ArtifactFile, Size: int64(len(content)), File: f, Content: io.NewSectionReader(f, 0, int64(len(content)))}
	}

	// Load: 200 scans, 16 at a time, some failing.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id := "ok"
			if i%10 == 0 {
				id = "panic-free-error"
			}
			res, err := c.Scan(context.Background(), art(id))
			if id == "ok" && (err != nil || res.Verdict != VerdictBenign) {
				errs <- fmt.Errorf("scan %d: %+v %v", i, res, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Cancel: the scan is blocked in the plugin when the host gives up.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Scan(ctx, art("block"))
		done <- err
	}()
	waitFor(t, func() bool { return openDescriptorsOf(t, path) == base+2 }) // host's reopen + plugin's
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled scan returned %v", err)
	}
	waitFor(t, func() bool { return openDescriptorsOf(t, path) == base })

	// Deadline: the plugin's context carries the host's.
	dctx, dcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := c.Scan(dctx, art("block"))
	dcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("scan past its deadline returned %v", err)
	}
	waitFor(t, func() bool { return openDescriptorsOf(t, path) == base })
	close(block)
}

// A plugin that dies mid-scan (its end of the socket closes): the host
// answers with an error that says the plugin is unavailable, never a
// verdict, and keeps no descriptor.
func TestByReferenceAPluginThatDiesMidScan(t *testing.T) {
	f := artifactFile(t, []byte("content"))
	dir := shortTempDir(t)
	path := filepath.Join(dir, DescriptorSocketName)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		buf, oob := make([]byte, maxDescriptorMessage), make([]byte, 64)
		_, oobn, _, _, _ := conn.ReadMsgUnix(buf, oob)
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			fds, _ := unix.ParseUnixRights(&m)
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
		conn.Close() // dies
	}()
	c := connect(t, &testScanner{scan: readAllBenign})
	c.fds.path = path
	c.fds.declare(true)
	res, err := c.Scan(context.Background(), Artifact{ID: "a", Type: ArtifactFile, Size: 7, File: f, Content: io.NewSectionReader(f, 0, 7)})
	if !errors.Is(err, ErrPluginUnavailable) {
		t.Fatalf("got %+v, %v; want ErrPluginUnavailable", res, err)
	}
	if n := openDescriptorsOf(t, f.Name()); n != 1 {
		t.Fatalf("%d descriptors of the artifact open, want only the test's", n)
	}
}

// The plugin's side refuses what is no valid request, closes every
// descriptor that came with it, and judges a file that does not hold the
// announced size unknown.
func TestByReferenceBadRequests(t *testing.T) {
	f := artifactFile(t, []byte("0123456789"))
	path := filepath.Join(shortTempDir(t), DescriptorSocketName)
	ln, err := serveDescriptors(path, &testScanner{scan: readAllBenign}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	send := func(h *proto.ScanHeader, fds ...int) (*proto.ScanResponse, bool) {
		bad := len(fds) != 1
		t.Helper()
		conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		msg, _ := gproto.Marshal(h)
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		if _, _, err := conn.WriteMsgUnix(msg, oob, nil); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, maxDescriptorMessage)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		resp := &proto.ScanResponse{}
		if err := gproto.Unmarshal(buf[:n], resp); err != nil {
			t.Fatal(err)
		}
		if !bad {
			return resp, false
		}
		// A bad request also ends the connection.
		n2, err2 := conn.Read(buf)
		return resp, n2 == 0 || err2 != nil
	}
	fd := int(f.Fd())
	h := &proto.ScanHeader{ArtifactId: "x", Type: proto.ArtifactType_ARTIFACT_TYPE_FILE, Size: 10}

	if resp, closed := send(h); resp.ErrorCode == 0 || !closed {
		t.Fatalf("no descriptor: %+v, closed %v", resp, closed)
	}
	if resp, closed := send(h, fd, fd); resp.ErrorCode == 0 || !closed {
		t.Fatalf("two descriptors: %+v, closed %v", resp, closed)
	}
	short := gproto.Clone(h).(*proto.ScanHeader)
	short.Size = 11
	if resp, _ := send(short, fd); resp.Verdict != proto.Verdict_VERDICT_UNKNOWN || !strings.Contains(resp.Reason, "holds 10 bytes") {
		t.Fatalf("size mismatch: %+v", resp)
	}
	if resp, _ := send(h, fd); resp.Verdict != proto.Verdict_VERDICT_BENIGN {
		t.Fatalf("a good request: %+v", resp)
	}
	waitFor(t, func() bool { return openDescriptorsOf(t, f.Name()) == 1 })
}

// waitFor polls cond (descriptors close asynchronously on the plugin's
// side) for up to 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type byRefScanner struct{ testScanner }

func (byRefScanner) Info(context.Context) (Info, error) {
	return Info{Name: "test", Version: "1.0.0", ArtifactTypes: []ArtifactType{ArtifactFile}, ByReference: true}, nil
}

// The host passes by reference only what Info declares, and the plugin's
// shim declares it only when it listens for descriptors.
func TestByReferenceIsDeclaredInInfo(t *testing.T) {
	for _, listening := range []bool{false, true} {
		impl := &byRefScanner{}
		client, _ := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{PluginName: &ScannerPlugin{Impl: impl, descriptors: listening}})
		raw, err := client.Dispense(PluginName)
		if err != nil {
			t.Fatal(err)
		}
		c := raw.(*GRPCClient)
		c.fds.path = "/nonexistent/" + DescriptorSocketName
		info, err := c.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.ByReference != listening || c.ByReference() != listening {
			t.Fatalf("listening %v: Info.ByReference %v, client by reference %v", listening, info.ByReference, c.ByReference())
		}
		client.Close()
	}
}

// A scanner that answers benign after its Content failed to read (here a
// descriptor without read access: pread fails with EBADF) is answered
// unknown, as a failed stream is.
func TestByReferenceAReadErrorIsNeverBenign(t *testing.T) {
	f := artifactFile(t, []byte("0123456789"))
	wo, err := os.OpenFile(f.Name(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer wo.Close()
	ignoresErrors := func(_ context.Context, a Artifact) (Result, error) {
		_, _ = io.Copy(io.Discard, a.Content)
		return Result{Verdict: VerdictBenign, Confidence: 1}, nil
	}
	s := &descriptorServer{impl: &testScanner{scan: ignoresErrors}, log: hclog.NewNullLogger()}
	dup, err := unix.Dup(int(wo.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	req := fdRequest{
		header: &proto.ScanHeader{ArtifactId: "x", Type: proto.ArtifactType_ARTIFACT_TYPE_FILE, Size: 10},
		file:   os.NewFile(uintptr(dup), "artifact"),
	}
	resp := s.answer(req, func(context.CancelFunc) bool { return true })
	if resp.Verdict != proto.Verdict_VERDICT_UNKNOWN || !strings.Contains(resp.Reason, "read the artifact") {
		t.Fatalf("a failed read answered %+v, want unknown", resp)
	}
}
