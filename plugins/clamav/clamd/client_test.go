package clamd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// chunkedReader yields at most n bytes per Read, as a gRPC stream of small
// chunks would.
type chunkedReader struct {
	r io.Reader
	n int
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

// failingReader yields n bytes, then fails.
type failingReader struct {
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	for i := range p {
		p[i] = 'x'
	}
	f.n -= len(p)
	return len(p), nil
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func newTestClient(t *testing.T, addr string, opts Options) *Client {
	t.Helper()
	c, err := NewClient(addr, opts)
	if err != nil {
		t.Fatalf("NewClient(%q): %v", addr, err)
	}
	// Before the fake stops: it waits for kept sessions to hang up.
	t.Cleanup(func() { c.Close() })
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// answerOK reads a whole INSTREAM, hands it to got, and answers OK.
func answerOK(got chan<- stream) func(net.Conn) {
	return func(conn net.Conn) {
		s := readInstream(conn, 0)
		got <- s
		if s.terminated {
			io.WriteString(conn, "stream: OK\x00")
		}
	}
}

func TestInstreamRebuffersReaderChunks(t *testing.T) {
	content := randomBytes(3*DefaultChunkSize+12345, 1)
	for _, readSize := range []int{1, 3, 4096, 64<<10 + 1, 1 << 20} {
		got := make(chan stream, 1)
		f := startFake(t, answerOK(got))
		c := newTestClient(t, f.address(), Options{})
		reply, err := c.Instream(testContext(t), &chunkedReader{r: bytes.NewReader(content), n: readSize})
		if err != nil {
			t.Fatalf("read size %d: Instream: %v", readSize, err)
		}
		s := <-got
		if reply.Status != StatusOK || reply.ContentBytes != int64(len(content)) {
			t.Errorf("read size %d: reply %+v, want OK for %d bytes", readSize, reply, len(content))
		}
		if s.command != cmdInstream || !s.terminated || !bytes.Equal(s.content, content) {
			t.Fatalf("read size %d: clamd got command %q, terminated %v, %d bytes (equal %v)",
				readSize, s.command, s.terminated, len(s.content), bytes.Equal(s.content, content))
		}
		// Whatever the reader yields, clamd gets full chunks and one short
		// last chunk.
		want := []int{DefaultChunkSize, DefaultChunkSize, DefaultChunkSize, 12345}
		if !slices.Equal(s.chunks, want) {
			t.Errorf("read size %d: chunk sizes %v, want %v", readSize, s.chunks, want)
		}
	}
}

func TestInstreamChunkSizeIsClamped(t *testing.T) {
	for _, tt := range []struct{ asked, want int }{{1, MinChunkSize}, {0, DefaultChunkSize}, {100 << 10, 100 << 10}, {8 << 20, MaxChunkSize}} {
		got := make(chan stream, 1)
		f := startFake(t, answerOK(got))
		c := newTestClient(t, f.address(), Options{ChunkSize: tt.asked})
		content := randomBytes(tt.want+1, 2)
		if _, err := c.Instream(testContext(t), bytes.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		if s := <-got; !slices.Equal(s.chunks, []int{tt.want, 1}) {
			t.Errorf("ChunkSize %d: chunks %v, want [%d 1]", tt.asked, s.chunks, tt.want)
		}
	}
}

func TestInstreamEmptyContent(t *testing.T) {
	for name, r := range map[string]io.Reader{"empty reader": bytes.NewReader(nil), "nil reader": nil} {
		got := make(chan stream, 1)
		f := startFake(t, answerOK(got))
		c := newTestClient(t, f.address(), Options{})
		reply, err := c.Instream(testContext(t), r)
		if err != nil || reply.Status != StatusOK || reply.ContentBytes != 0 {
			t.Fatalf("%s: reply %+v, err %v; want OK for 0 bytes", name, reply, err)
		}
		if s := <-got; !s.terminated || len(s.chunks) != 0 {
			t.Errorf("%s: clamd got %+v, want just the terminator", name, s)
		}
	}
}

func TestInstreamMaxStreamSizeSendsNothingPastIt(t *testing.T) {
	const max = 100 << 10
	got := make(chan stream, 1)
	f := startFake(t, answerOK(got))
	c := newTestClient(t, f.address(), Options{MaxStreamSize: max, ChunkSize: 64 << 10})

	// Unknown length, longer than the cap: abandoned, unterminated.
	reply, err := c.Instream(testContext(t), &chunkedReader{r: bytes.NewReader(randomBytes(3*max, 3)), n: 1000})
	if !errors.Is(err, ErrSizeLimit) || reply != (Reply{}) {
		t.Fatalf("over the cap: reply %+v, err %v; want ErrSizeLimit", reply, err)
	}
	s := <-got
	if s.terminated || len(s.content) > max {
		t.Errorf("over the cap: clamd got %d bytes, terminated %v; want at most %d, unterminated", len(s.content), s.terminated, max)
	}

	// Exactly the cap is fine.
	reply, err = c.Instream(testContext(t), bytes.NewReader(randomBytes(max, 4)))
	if err != nil || reply.Status != StatusOK || reply.ContentBytes != max {
		t.Fatalf("at the cap: reply %+v, err %v; want OK", reply, err)
	}
	<-got
}

func TestInstreamContentReadErrorIsNeverTerminated(t *testing.T) {
	got := make(chan stream, 1)
	f := startFake(t, answerOK(got))
	c := newTestClient(t, f.address(), Options{})
	boom := errors.New("host stream broke")
	reply, err := c.Instream(testContext(t), &failingReader{n: 10 << 10, err: boom})
	if !errors.Is(err, ErrContent) || !errors.Is(err, boom) || reply != (Reply{}) {
		t.Fatalf("reply %+v, err %v; want ErrContent wrapping the read error", reply, err)
	}
	if s := <-got; s.terminated {
		t.Error("clamd got the terminator of a stream whose content failed: it would have scanned a partial artifact")
	}
}

func TestInstreamReadsReplyAfterWriteFails(t *testing.T) {
	// As clamd does at StreamMaxLength: answer, then hang up while the
	// client is still writing.
	f := startFake(t, func(conn net.Conn) {
		readInstream(conn, 128<<10)
		io.WriteString(conn, "INSTREAM size limit exceeded. ERROR\x00")
	})
	c := newTestClient(t, f.address(), Options{})
	reply, err := c.Instream(testContext(t), bytes.NewReader(randomBytes(16<<20, 5)))
	if !errors.Is(err, ErrSizeLimit) || reply != (Reply{}) {
		t.Fatalf("reply %+v, err %v; want ErrSizeLimit read after the write failed", reply, err)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Reply != sizeLimitReply || !ce.Sent || Retryable(err) {
		t.Errorf("error %#v: want Reply %q, Sent, not retryable", ce, sizeLimitReply)
	}
}

func TestInstreamEarlyOKIsNotAVerdict(t *testing.T) {
	// A reply of OK before the stream was sent whole cannot be about the
	// whole artifact.
	f := startFake(t, func(conn net.Conn) {
		readInstream(conn, 128<<10)
		io.WriteString(conn, "stream: OK\x00")
	})
	c := newTestClient(t, f.address(), Options{})
	reply, err := c.Instream(testContext(t), bytes.NewReader(randomBytes(16<<20, 6)))
	if !errors.Is(err, ErrProtocol) || reply.Status == StatusOK {
		t.Fatalf("reply %+v, err %v; want ErrProtocol", reply, err)
	}
}

func TestInstreamBadReplies(t *testing.T) {
	tests := []struct {
		name    string
		serve   func(net.Conn)
		wantErr error
	}{
		{"closed without reply", func(conn net.Conn) { readInstream(conn, 0) }, ErrNoReply},
		{"closed mid-stream", func(conn net.Conn) { readInstream(conn, 64<<10) }, ErrNoReply},
		{"closed at once", func(conn net.Conn) {}, ErrNoReply},
		{"truncated OK", func(conn net.Conn) { readInstream(conn, 0); io.WriteString(conn, "stream: O") }, ErrProtocol},
		{"unterminated OK", func(conn net.Conn) { readInstream(conn, 0); io.WriteString(conn, "stream: OK") }, ErrProtocol},
		{"newline OK", func(conn net.Conn) { readInstream(conn, 0); io.WriteString(conn, "stream: OK\n") }, ErrProtocol},
		{"garbage", func(conn net.Conn) { readInstream(conn, 0); io.WriteString(conn, "\x7fELF\x02\x01\x00") }, ErrProtocol},
		{"endless reply", func(conn net.Conn) {
			readInstream(conn, 0)
			io.WriteString(conn, strings.Repeat("A", 3*maxReplySize))
		}, ErrProtocol},
		{"command timeout", func(conn net.Conn) { readInstream(conn, 0); io.WriteString(conn, "COMMAND READ TIMED OUT\n") }, ErrCommandTimeout},
		{"scan error", func(conn net.Conn) {
			readInstream(conn, 0)
			io.WriteString(conn, "stream: Can't create temporary file ERROR\x00")
		}, ErrScan},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, tt.serve)
			c := newTestClient(t, f.address(), Options{})
			reply, err := c.Instream(testContext(t), bytes.NewReader(randomBytes(300<<10, 7)))
			if !errors.Is(err, tt.wantErr) || reply != (Reply{}) {
				t.Fatalf("reply %+v, err %v; want %v", reply, err, tt.wantErr)
			}
			if Retryable(err) {
				t.Errorf("%v is retryable, but content was sent", err)
			}
		})
	}
}

// promptly runs call and fails the test unless it returns within 10 s of
// the cancel or deadline it is waiting for. A broken call waits for a
// clamd that never reads or answers, forever; a working one returns in
// milliseconds, and a loaded machine must not tell them apart by a
// tighter bound (these were held to 1 s).
func promptly(t *testing.T, call func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting 10s after its context ended")
		return nil
	}
}

func TestInstreamCancelWhileClamdStalls(t *testing.T) {
	release := make(chan struct{})
	f := startFake(t, func(conn net.Conn) { <-release }) // accepts, never reads
	t.Cleanup(func() { close(release) })
	c := newTestClient(t, f.address(), Options{})

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	// Far more than the socket buffers hold: the client blocks in a write.
	err := promptly(t, func() error {
		_, err := c.Instream(ctx, io.LimitReader(zeroReader{}, 1<<30))
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestInstreamDeadlineWhileClamdSilent(t *testing.T) {
	release := make(chan struct{})
	f := startFake(t, func(conn net.Conn) { readInstream(conn, 0); <-release }) // never answers
	t.Cleanup(func() { close(release) })

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	c := newTestClient(t, f.address(), Options{})
	err := promptly(t, func() error {
		_, err := c.Instream(ctx, bytes.NewReader([]byte("abc")))
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}

	// The per-call Timeout does the same without a context deadline.
	c = newTestClient(t, f.address(), Options{Timeout: 200 * time.Millisecond})
	err = promptly(t, func() error {
		_, err := c.Instream(context.Background(), bytes.NewReader([]byte("abc")))
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Options.Timeout: err = %v, want context.DeadlineExceeded", err)
	}
}

func TestConnectFailureIsRetryableAndConsumesNothing(t *testing.T) {
	dir, err := os.MkdirTemp("", "noclamd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// A socket file nobody listens on (a crashed clamd's): ECONNREFUSED.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	for name, addr := range map[string]string{"missing socket": "unix://" + filepath.Join(dir, "none.sock"), "stale socket": "unix://" + stale} {
		c := newTestClient(t, addr, Options{})
		content := bytes.NewReader([]byte("content"))
		_, err := c.Instream(testContext(t), content)
		var ce *Error
		if !errors.Is(err, ErrConnect) || !errors.As(err, &ce) || ce.Sent || !Retryable(err) {
			t.Errorf("%s: err = %v; want a retryable ErrConnect with nothing sent", name, err)
		}
		if content.Len() != len("content") {
			t.Errorf("%s: content was read although the connection failed", name)
		}
		if err := c.Ping(testContext(t)); !errors.Is(err, ErrConnect) {
			t.Errorf("%s: Ping err = %v, want ErrConnect", name, err)
		}
	}
}

func TestPingVersionStatsAgainstFake(t *testing.T) {
	replies := map[string]string{
		cmdPing:    "PONG\x00",
		cmdVersion: "ClamAV 1.4.6/27832/Tue Nov 24 09:00:00 2026\x00",
		cmdStats:   "POOLS: 1\n\nSTATE: VALID PRIMARY\nTHREADS: live 1  idle 0 max 10 idle-timeout 30\nQUEUE: 0 items\nEND\x00",
	}
	f := startFake(t, func(conn net.Conn) { io.WriteString(conn, replies[readCommand(conn)]) })
	c := newTestClient(t, f.address(), Options{})
	ctx := testContext(t)
	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if v, err := c.Version(ctx); err != nil || v.Engine != "1.4.6" || v.Database != "27832" {
		t.Errorf("Version = %+v, %v", v, err)
	}
	if st, err := c.Stats(ctx); err != nil || st.ThreadsMax != 10 {
		t.Errorf("Stats = %+v, %v", st, err)
	}

	bad := startFake(t, func(conn net.Conn) {
		switch readCommand(conn) {
		case cmdPing:
			io.WriteString(conn, "PANG\x00")
		case cmdVersion:
			io.WriteString(conn, "ClamAV") // no terminator, then hang up
		}
	})
	c = newTestClient(t, bad.address(), Options{})
	if err := c.Ping(ctx); !errors.Is(err, ErrProtocol) {
		t.Errorf("Ping answered PANG: err = %v, want ErrProtocol", err)
	}
	if _, err := c.Version(ctx); !errors.Is(err, ErrNoReply) {
		t.Errorf("Version cut short: err = %v, want ErrNoReply", err)
	}
	if _, err := c.Stats(ctx); !errors.Is(err, ErrNoReply) {
		t.Errorf("Stats without reply: err = %v, want ErrNoReply", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
