package shared

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/microengine/microengine/shared/proto"
)

// testScanner's behaviour is set per test; the shims between it and the
// client are the real gRPC ones, in process.
type testScanner struct {
	scan      func(ctx context.Context, a Artifact) (Result, error)
	configure func(raw []byte) error
}

func (s *testScanner) Info(context.Context) (Info, error) {
	return Info{Name: "test", Version: "1.0.0", ArtifactTypes: []ArtifactType{ArtifactFile}}, nil
}
func (s *testScanner) Configure(_ context.Context, raw []byte) error { return s.configure(raw) }
func (s *testScanner) Health(context.Context) (Health, error)        { return Health{Healthy: true}, nil }
func (s *testScanner) Scan(ctx context.Context, a Artifact) (Result, error) {
	return s.scan(ctx, a)
}

func connect(t testing.TB, impl Scanner) *GRPCClient {
	t.Helper()
	client, _ := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{PluginName: &ScannerPlugin{Impl: impl}})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	return raw.(*GRPCClient)
}

// readAllBenign reads everything and calls it benign: the shim must still
// refuse that answer when the stream was not what its header announced.
func readAllBenign(_ context.Context, a Artifact) (Result, error) {
	n, err := io.Copy(io.Discard, a.Content)
	if err != nil {
		return Unknown("read: %v", err), nil
	}
	return Result{Verdict: VerdictBenign, Confidence: 1, BytesScanned: n}, nil
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

func TestBenignNeedsTheWholeAnnouncedStream(t *testing.T) {
	var got []byte
	c := connect(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		b, err := io.ReadAll(a.Content)
		if err != nil {
			return Unknown("read: %v", err), nil
		}
		got = b
		return Result{Verdict: VerdictBenign, Confidence: 1}, nil
	}})
	ctx := context.Background()
	content := bytes.Repeat([]byte("0123456789"), 100_000) // 1,000,000 bytes

	for _, size := range []int{1, 3, 4096, MaxChunkSize} {
		want := content
		if size < 10 {
			want = content[:30_000] // a message per byte is slow; the boundaries are what matter
		}
		res, err := c.WithChunkSize(size).Scan(ctx, Artifact{Type: ArtifactFile, Size: int64(len(want)), Content: bytes.NewReader(want)})
		if err != nil || res.Verdict != VerdictBenign || !bytes.Equal(got, want) {
			t.Fatalf("chunk size %d: %v %+v, content intact %v", size, err, res, bytes.Equal(got, want))
		}
	}

	res, err := c.Scan(ctx, Artifact{Type: ArtifactFile, Size: 2_000_000, Content: bytes.NewReader(content)})
	if err != nil || res.Verdict != VerdictUnknown || !strings.Contains(res.Reason, "1000000 of 2000000") {
		t.Fatalf("short stream: %v %+v; want unknown naming the shortfall", err, res)
	}
	res, err = c.Scan(ctx, Artifact{Type: ArtifactFile, Size: 10, Content: bytes.NewReader(content)})
	if err != nil || res.Verdict != VerdictUnknown {
		t.Fatalf("overlong stream: %v %+v; want unknown", err, res)
	}
}

// A scanner that reads the whole stream, drops the read error (here
// ErrStreamLength) and answers benign must still get unknown: the guard
// checks the content reader's own error, whatever the scanner did with it.
func TestBenignIgnoringTheReadErrorIsUnknown(t *testing.T) {
	var sawErr atomic.Int32
	c := connect(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		n, err := io.Copy(io.Discard, a.Content)
		if errors.Is(err, ErrStreamLength) {
			sawErr.Add(1) // and carries on regardless
		}
		return Result{Verdict: VerdictBenign, Confidence: 1, BytesScanned: n}, nil
	}})
	content := bytes.Repeat([]byte("0123456789"), 30_000) // 300,000 bytes
	for _, tc := range []struct {
		name  string
		c     *GRPCClient
		size  int64
		bytes []byte
	}{
		{"short stream", c, 400_000, content},       // streamed: over one chunk
		{"short inline", c, 1000, content[:700]},    // whole in one session message
		{"overlong stream", c, 200_000, content},    // more than announced
		{"overlong inline", c, 500, content[:1000]}, // one byte over reaches the plugin
		{"short, 1 KiB chunks", c.WithChunkSize(1024), 4096, content[:3000]},
	} {
		before := sawErr.Load()
		res, err := tc.c.Scan(context.Background(), Artifact{Type: ArtifactFile, Size: tc.size, Content: bytes.NewReader(tc.bytes)})
		if err != nil || res.Verdict != VerdictUnknown || !strings.Contains(res.Reason, ErrStreamLength.Error()) {
			t.Errorf("%s: %v %+v; want unknown naming the length mismatch", tc.name, err, res)
		}
		if sawErr.Load() == before {
			t.Errorf("%s: the scanner never saw ErrStreamLength, so the test did not test the guard", tc.name)
		}
	}
	// The same scanner's benign stands on a stream that matches its header.
	res, err := c.Scan(context.Background(), Artifact{Type: ArtifactFile, Size: int64(len(content)), Content: bytes.NewReader(content)})
	if err != nil || res.Verdict != VerdictBenign {
		t.Errorf("whole stream: %v %+v; want benign", err, res)
	}
}

func TestEarlyBenignIsCheckedAgainstTheRest(t *testing.T) {
	c := connect(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		buf := make([]byte, 16) // decides from the first bytes only
		io.ReadFull(a.Content, buf)
		return Result{Verdict: VerdictBenign, Confidence: 1}, nil
	}})
	content := make([]byte, 300_000)
	res, err := c.Scan(context.Background(), Artifact{Type: ArtifactFile, Size: int64(len(content)), Content: bytes.NewReader(content)})
	if err != nil || res.Verdict != VerdictBenign {
		t.Fatalf("complete stream: %v %+v; want benign", err, res)
	}
	res, err = c.Scan(context.Background(), Artifact{Type: ArtifactFile, Size: 400_000, Content: bytes.NewReader(content)})
	if err != nil || res.Verdict != VerdictUnknown {
		t.Fatalf("short stream, scanner decided early: %v %+v; want unknown", err, res)
	}
}

func TestContentReadErrorIsNotTheEnd(t *testing.T) {
	c := connect(t, &testScanner{scan: readAllBenign})
	// Unknown size: without a cancel, the plugin would see a clean end of
	// stream and could call the first 100 KiB benign.
	res, err := c.Scan(context.Background(), Artifact{Type: ArtifactFile, Size: -1, Content: &failingReader{n: 100 << 10}})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("read error: %v %+v; want the scan to fail with the read error", err, res)
	}
}

func TestInvalidAnswersBecomeUnknown(t *testing.T) {
	for _, tc := range []struct {
		res  Result
		want Verdict
		conf float64
	}{
		{Result{Verdict: "clean"}, VerdictUnknown, 0},
		{Result{Verdict: ""}, VerdictUnknown, 0},
		{Result{Verdict: VerdictMalicious, Confidence: 7}, VerdictMalicious, 1},
		{Result{Verdict: VerdictMalicious, Confidence: -1}, VerdictMalicious, 0},
	} {
		c := connect(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
			io.Copy(io.Discard, a.Content)
			return tc.res, nil
		}})
		res, err := c.Scan(context.Background(), Artifact{Type: ArtifactFile, Size: 1, Content: strings.NewReader("x")})
		if err != nil || res.Verdict != tc.want || res.Confidence != tc.conf {
			t.Errorf("scanner answered %+v: got %+v %v; want %s with confidence %v", tc.res, res, err, tc.want, tc.conf)
		}
	}
}

func TestCancellationReachesThePlugin(t *testing.T) {
	c := connect(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		<-ctx.Done()
		return Result{}, ctx.Err()
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Scan(ctx, Artifact{Type: ArtifactFile, Size: 1, Content: strings.NewReader("x")})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("after %s: %v; want context.DeadlineExceeded promptly", time.Since(start), err)
	}
}

func TestConfigErrorsCrossTheBoundary(t *testing.T) {
	c := connect(t, &testScanner{configure: func(raw []byte) error {
		if string(raw) == `{"ok":true}` {
			return nil
		}
		return (&ConfigError{}).Add("address", "want unix:// or tcp://").Add("", "whole block is odd")
	}})
	if err := c.Configure(context.Background(), []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	err := c.Configure(context.Background(), []byte(`{"address":"ftp://x"}`))
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Fields) != 2 || ce.Fields[0].Field != "address" {
		t.Fatalf("got %#v; want a ConfigError with both faults", err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "4096": 4096, "25M": 25 << 20, "25m": 25 << 20, "100MiB": 100 << 20,
		"1GiB": 1 << 30, "1G": 1 << 30, "25MB": 25_000_000, " 64 KiB ": 64 << 10, "2K": 2048,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "1.5M", "10 parsecs", "99999999999999999999", "9000000000T"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func TestSessionsCarrySmallArtifacts(t *testing.T) {
	var sawDeadline atomic.Bool
	c := connect(t, &testScanner{scan: func(ctx context.Context, a Artifact) (Result, error) {
		if _, ok := ctx.Deadline(); ok {
			sawDeadline.Store(true)
		}
		b, err := io.ReadAll(a.Content)
		if err != nil {
			return Unknown("read: %v", err), nil
		}
		if bytes.Equal(b, []byte("block")) {
			<-ctx.Done()
			return Result{}, ctx.Err()
		}
		return Result{Verdict: VerdictBenign, Confidence: 1, BytesScanned: int64(len(b))}, nil
	}})
	scan := func(ctx context.Context, content string, size int64) (Result, error) {
		return c.Scan(ctx, Artifact{Type: ArtifactFile, Size: size, Content: strings.NewReader(content)})
	}
	ctx := context.Background()
	for i := range 50 { // many scans reuse few streams
		res, err := scan(ctx, fmt.Sprint("small ", i), int64(len(fmt.Sprint("small ", i))))
		if err != nil || res.Verdict != VerdictBenign {
			t.Fatalf("scan %d: %v %+v", i, err, res)
		}
	}
	if n := len(c.sessions.idle); n == 0 || n > 2 {
		t.Errorf("%d idle sessions after serial scans; want them reused", n)
	}
	if res, err := scan(ctx, "0123456789", 5); err != nil || res.Verdict != VerdictUnknown {
		t.Errorf("overlong inline artifact: %v %+v; want unknown", err, res)
	}
	if res, err := scan(ctx, "abc", 5); err != nil || res.Verdict != VerdictUnknown {
		t.Errorf("short inline artifact: %v %+v; want unknown", err, res)
	}

	// The deadline travels with the header, and a cancelled scan returns
	// at once and leaves the pool usable.
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := scan(dctx, "block", 5); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("blocked inline scan: %v after %s; want context.DeadlineExceeded promptly", err, time.Since(start))
	}
	if !sawDeadline.Load() {
		t.Error("the plugin never saw a deadline")
	}
	cctx, ccancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, ccancel)
	if _, err := c.Scan(cctx, Artifact{Type: ArtifactFile, Size: 5, Content: strings.NewReader("block")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled inline scan: %v; want context.Canceled", err)
	}
	if res, err := scan(ctx, "after", 5); err != nil || res.Verdict != VerdictBenign {
		t.Fatalf("scan after a cancelled one: %v %+v", err, res)
	}
}

// noSessionsPlugin is a plugin built against the contract before ScanSession.
type noSessionsPlugin struct{ ScannerPlugin }

type noSessionsServer struct{ *grpcServer }

func (noSessionsServer) ScanSession(proto.Scanner_ScanSessionServer) error {
	return status.Error(codes.Unimplemented, "method ScanSession not implemented")
}

func (p *noSessionsPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	proto.RegisterScannerServer(s, noSessionsServer{&grpcServer{impl: p.Impl}})
	return nil
}

func TestPluginsWithoutSessionsGetStreams(t *testing.T) {
	client, _ := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{
		PluginName: &noSessionsPlugin{ScannerPlugin{Impl: &testScanner{scan: readAllBenign}}},
	})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	c := raw.(*GRPCClient)
	for i := range 3 {
		res, err := c.Scan(context.Background(), Artifact{Type: ArtifactFile, Size: 5, Content: strings.NewReader("hello")})
		if err != nil || res.Verdict != VerdictBenign || res.BytesScanned != 5 {
			t.Fatalf("scan %d against an old plugin: %v %+v", i, err, res)
		}
	}
	if c.sessions.enabled() {
		t.Error("sessions still enabled against a plugin without them")
	}
}
