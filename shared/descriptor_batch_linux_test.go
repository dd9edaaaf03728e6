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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
	gproto "google.golang.org/protobuf/proto"

	"github.com/microengine/microengine/shared/proto"
)

// connectByBatches is connectByReference with the batch socket served as
// well, as Serve does in a plugin launched by a host.
func connectByBatches(t testing.TB, impl Scanner) *GRPCClient {
	t.Helper()
	c := connectByReference(t, impl)
	ln, err := serveBatches(filepath.Join(filepath.Dir(c.fds.path), BatchSocketName), impl, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return c
}

// Many scans at once share the batch connection, are held back into
// messages of several, and each gets its own answer; afterwards no
// descriptor of the artifact is left open on either side.
func TestBatchesAnswerEachScanItsOwn(t *testing.T) {
	content := bytes.Repeat([]byte{3}, 4<<10)
	f := artifactFile(t, content)
	base := openDescriptorsOf(t, f.Name())
	c := connectByBatches(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		if a.File == nil {
			return Result{}, errors.New("streamed, not by reference")
		}
		res, err := readAllBenign(ctx, a)
		if err != nil || res.Verdict != VerdictBenign {
			return res, err
		}
		var n int
		fmt.Sscanf(a.ID, "a%d", &n)
		if n%3 == 0 {
			return Result{Verdict: VerdictMalicious, Confidence: 1, MalwareFamily: a.ID}, nil
		}
		return Result{Verdict: VerdictBenign, Confidence: 1, Metadata: map[string]string{"id": a.ID}}, nil
	}})
	const scans, inFlight = 600, 3 * batchBusy
	var wg sync.WaitGroup
	sem := make(chan struct{}, inFlight)
	errs := make(chan error, scans)
	for i := range scans {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id := fmt.Sprintf("a%d", i)
			res, err := c.Scan(context.Background(), Artifact{ID: id, Type: ArtifactFile, Size: int64(len(content)), File: f, Content: io.NewSectionReader(f, 0, int64(len(content)))})
			switch {
			case err != nil:
				errs <- fmt.Errorf("%s: %v", id, err)
			case i%3 == 0 && (res.Verdict != VerdictMalicious || res.MalwareFamily != id):
				errs <- fmt.Errorf("%s: got %s %q, want malicious %q", id, res.Verdict, res.MalwareFamily, id)
			case i%3 != 0 && (res.Verdict != VerdictBenign || res.Metadata["id"] != id):
				errs <- fmt.Errorf("%s: got %s for %q, want benign", id, res.Verdict, res.Metadata["id"])
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c.fds.noBatches.Load() {
		t.Fatal("the scans did not go over the batch socket")
	}
	waitFor(t, func() bool { return openDescriptorsOf(t, f.Name()) == base })
}

// A scan the host gives up on (cancel, deadline) is cancelled in the
// plugin, while the other scans of the connection go on; no descriptor is
// left open.
func TestBatchesCancelOneScan(t *testing.T) {
	f := artifactFile(t, []byte("content"))
	path := f.Name()
	base := openDescriptorsOf(t, path)
	cancelled := make(chan string, 2)
	c := connectByBatches(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		if a.ID == "block" {
			<-ctx.Done()
			cancelled <- a.ID
			return Result{}, ctx.Err()
		}
		return readAllBenign(ctx, a)
	}})
	art := func(id string) Artifact {
		return Artifact{ID: id, Type: ArtifactFile, Size: 7, File: f, Content: io.NewSectionReader(f, 0, 7)}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Scan(ctx, art("block"))
		done <- err
	}()
	waitFor(t, func() bool { return openDescriptorsOf(t, path) == base+2 }) // host's reopen + plugin's
	if res, err := c.Scan(context.Background(), art("other")); err != nil || res.Verdict != VerdictBenign {
		t.Fatalf("a scan beside the blocked one: %+v, %v", res, err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled scan returned %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin's scan was not cancelled")
	}
	waitFor(t, func() bool { return openDescriptorsOf(t, path) == base })

	dctx, dcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer dcancel()
	if _, err := c.Scan(dctx, art("block")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("scan past its deadline returned %v", err)
	}
	waitFor(t, func() bool { return openDescriptorsOf(t, path) == base })
	if res, err := c.Scan(context.Background(), art("after")); err != nil || res.Verdict != VerdictBenign {
		t.Fatalf("a scan after the cancels: %+v, %v", res, err)
	}
}

// A plugin without a batch socket (older than it) still gets artifacts
// by reference, one per message.
func TestBatchesFallBackToOneByOne(t *testing.T) {
	f := artifactFile(t, []byte("content"))
	byRef := make(chan bool, 1)
	c := connectByReference(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		byRef <- a.File != nil
		return readAllBenign(ctx, a)
	}})
	res, err := c.Scan(context.Background(), Artifact{ID: "a", Type: ArtifactFile, Size: 7, File: f, Content: io.NewSectionReader(f, 0, 7)})
	if err != nil || res.Verdict != VerdictBenign {
		t.Fatalf("scan: %+v, %v", res, err)
	}
	if !<-byRef || !c.fds.noBatches.Load() {
		t.Fatal("want the artifact by reference over the descriptor socket")
	}
}

// A plugin that dies with scans on its batch connection: each answers an
// error that says the plugin is unavailable, never a verdict, and the
// host keeps no descriptor.
func TestBatchesAPluginThatDiesMidScan(t *testing.T) {
	f := artifactFile(t, []byte("content"))
	dir := shortTempDir(t)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(dir, BatchSocketName), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int, 1)
	go func() {
		conn, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		// Take requests until three are in, then die.
		n := 0
		buf, oob := make([]byte, maxDescriptorMessage), make([]byte, unix.CmsgSpace(4*maxBatch))
		for n < 3 {
			batch, files, err := readBatch(conn, buf, oob)
			if err != nil {
				break
			}
			n += len(batch.Headers)
			for _, f := range files {
				f.Close()
			}
		}
		got <- n
		conn.Close()
	}()
	c := connect(t, &testScanner{scan: readAllBenign})
	c.fds.path = filepath.Join(dir, DescriptorSocketName)
	c.fds.declare(true)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Scan(context.Background(), Artifact{ID: fmt.Sprint(i), Type: ArtifactFile, Size: 7, File: f, Content: io.NewSectionReader(f, 0, 7)})
			if !errors.Is(err, ErrPluginUnavailable) {
				t.Errorf("got %+v, %v; want ErrPluginUnavailable", res, err)
			}
		}()
	}
	wg.Wait()
	if n := <-got; n != 3 {
		t.Fatalf("the plugin got %d requests, want 3", n)
	}
	if n := openDescriptorsOf(t, f.Name()); n != 1 {
		t.Fatalf("%d descriptors of the artifact open, want only the test's", n)
	}
}

// A batch whose descriptors do not match its headers ends the connection,
// and the plugin closes every descriptor that came with it.
func TestBatchesABadBatchClosesTheConnection(t *testing.T) {
	f := artifactFile(t, []byte("content"))
	base := openDescriptorsOf(t, f.Name())
	path := filepath.Join(shortTempDir(t), BatchSocketName)
	scanned := make(chan struct{}, 2)
	ln, err := serveBatches(path, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		scanned <- struct{}{}
		return readAllBenign(ctx, a)
	}}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg, err := gproto.Marshal(&proto.ScanBatch{Headers: []*proto.ScanHeader{
		{RequestId: 1, ArtifactId: "a", Type: proto.ArtifactType_ARTIFACT_TYPE_FILE, Size: 7},
		{RequestId: 2, ArtifactId: "b", Type: proto.ArtifactType_ARTIFACT_TYPE_FILE, Size: 7},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := conn.WriteMsgUnix(msg, unix.UnixRights(int(f.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, maxDescriptorMessage)); err == nil && n > 0 {
		t.Fatalf("the plugin answered a bad batch (%d bytes) instead of closing", n)
	}
	if len(scanned) != 0 {
		t.Fatal("the plugin scanned a bad batch")
	}
	waitFor(t, func() bool { return openDescriptorsOf(t, f.Name()) == base })
}

// Requests held back while the pipeline is deep go out when the hold ends
// even if no answer comes to release them: here the plugin answers none
// until every scan has reached it.
func TestBatchesHeldRequestsGoWithoutAnAnswer(t *testing.T) {
	content := []byte("held")
	f := artifactFile(t, content)
	const scans = 2*batchBusy + 8
	arrived := make(chan struct{}, scans)
	all := make(chan struct{})
	var once sync.Once
	var n atomic.Int32
	c := connectByBatches(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		arrived <- struct{}{}
		if n.Add(1) == scans {
			once.Do(func() { close(all) })
		}
		select {
		case <-all:
			return Result{Verdict: VerdictBenign, Confidence: 1}, nil
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, scans)
	for i := range scans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Scan(ctx, Artifact{ID: fmt.Sprint(i), Type: ArtifactFile, Size: int64(len(content)), File: f, Content: io.NewSectionReader(f, 0, int64(len(content)))})
			if err != nil || res.Verdict != VerdictBenign {
				errs <- fmt.Errorf("scan %d: %v, %v", i, res.Verdict, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(arrived) != scans {
		t.Fatalf("%d scans reached the plugin, want %d", len(arrived), scans)
	}
}

// The answers go in one message that decodes as the ScanBatchResponse of
// them, in order, and each one's descriptor is released before it goes.
func TestBatchAnswersEncodeAsTheBatchMessage(t *testing.T) {
	if got := (&proto.ScanBatchResponse{}).ProtoReflect().Descriptor().Fields().ByName("responses").Number(); got != batchResponsesField {
		t.Fatalf("ScanBatchResponse.responses is field %d, the writer encodes field %d", got, batchResponsesField)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	w, r := conn(fds[0]), conn(fds[1])
	want := &proto.ScanBatchResponse{}
	var files []*os.File
	out := make(chan batchReply, 8)
	for i := range 8 {
		resp := &proto.ScanResponse{RequestId: uint64(100 + i)}
		switch i % 3 {
		case 0:
			resp.Verdict = proto.Verdict_VERDICT_BENIGN
			resp.Confidence = 1
			resp.Metadata = map[string]string{"vendor_version": "1.4.6", "signatures_version": "27431"}
		case 1:
			resp.Verdict = proto.Verdict_VERDICT_MALICIOUS
			resp.MalwareFamily = fmt.Sprintf("Family.%d", i)
		default:
			resp.ErrorCode = 8
			resp.ErrorMessage = "busy"
		}
		want.Responses = append(want.Responses, resp)
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		out <- batchReply{resp, f}
	}
	close(out)
	// Nothing under way: no hold, whatever came at once goes at once.
	writeBatchAnswers(w, out, func() int { return 0 }, func(f *os.File) { f.Close() })
	got := &proto.ScanBatchResponse{}
	buf := make([]byte, maxDescriptorMessage)
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got.Responses) < len(want.Responses) {
		n, err := r.Read(buf)
		if err != nil {
			t.Fatalf("after %d answers: %v", len(got.Responses), err)
		}
		var m proto.ScanBatchResponse
		if err := gproto.Unmarshal(buf[:n], &m); err != nil {
			t.Fatalf("a message that is no ScanBatchResponse: %v", err)
		}
		got.Responses = append(got.Responses, m.Responses...)
	}
	if !gproto.Equal(got, want) {
		t.Errorf("answers decode as\n%v\nwant\n%v", got, want)
	}
	for i, f := range files {
		if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
			t.Errorf("descriptor %d is still open once its answer went (%v)", i, err)
		}
	}
}
