package clamd

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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/microengine/microengine/internal/devclamd"
)

// sessionFake is a stand-in clamd that speaks IDSESSION: it counts
// connections and what each INSTREAM carried.
type sessionFake struct {
	*fakeClamd
	conns atomic.Int32
	mu    sync.Mutex
	seen  []string // content of each INSTREAM, in order
}

// startSessionFake serves sessions. Each connection answers at most
// perConn commands (0: no limit) and then hangs up, as clamd does with a
// session idle past its ReadTimeout. reply(n, content) is the reply to the
// nth command of a connection, number included.
func startSessionFake(t *testing.T, perConn int, reply func(n int, content []byte) string) *sessionFake {
	f := &sessionFake{}
	f.fakeClamd = startFake(t, func(conn net.Conn) {
		f.conns.Add(1)
		session := readCommand(conn) == cmdSession
		for n := 1; perConn == 0 || n <= perConn; n++ {
			var s stream
			if session {
				s = readInstream(conn, 0)
			} else {
				s = readChunks(conn, 0, stream{})
			}
			if !s.terminated {
				return
			}
			f.mu.Lock()
			f.seen = append(f.seen, string(s.content))
			f.mu.Unlock()
			io.WriteString(conn, reply(n, s.content))
			if !session {
				return
			}
		}
	})
	return f
}

func numberedOK(n int, _ []byte) string { return fmt.Sprintf("%d: stream: OK\x00", n) }

func (f *sessionFake) contents() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func scanOK(t *testing.T, c *Client, content []byte) {
	t.Helper()
	reply, err := c.Instream(testContext(t), bytes.NewReader(content))
	if err != nil || reply.Status != StatusOK || reply.ContentBytes != int64(len(content)) {
		t.Fatalf("Instream = %+v, %v; want OK for %d bytes", reply, err, len(content))
	}
}

func TestSessionIsReused(t *testing.T) {
	f := startSessionFake(t, 0, numberedOK)
	c := newTestClient(t, f.address(), Options{Sessions: 2})
	for i := range 10 {
		scanOK(t, c, []byte(fmt.Sprintf("artifact %d", i)))
	}
	if n := f.conns.Load(); n != 1 {
		t.Errorf("10 scans one after another opened %d connections, want 1", n)
	}
	if got := f.contents(); len(got) != 10 || got[9] != "artifact 9" {
		t.Errorf("clamd saw %q", got)
	}
}

func TestWithoutSessionsEachScanHasItsConnection(t *testing.T) {
	f := startSessionFake(t, 0, func(int, []byte) string { return "stream: OK\x00" })
	c := newTestClient(t, f.address(), Options{})
	for range 3 {
		scanOK(t, c, []byte("x"))
	}
	if n := f.conns.Load(); n != 3 {
		t.Errorf("3 scans opened %d connections, want 3", n)
	}
}

func TestSessionDroppedWhileIdleIsResent(t *testing.T) {
	// Every session dies after one command: each later scan finds its
	// kept session gone and must send the whole artifact again.
	f := startSessionFake(t, 1, numberedOK)
	c := newTestClient(t, f.address(), Options{Sessions: 1})
	for i := range 3 {
		scanOK(t, c, []byte(fmt.Sprintf("artifact %d", i)))
	}
	want := []string{"artifact 0", "artifact 1", "artifact 2"}
	if got := f.contents(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("clamd saw %q, want each artifact whole once: %q", got, want)
	}
}

func TestLargeArtifactGetsItsOwnConnection(t *testing.T) {
	f := startSessionFake(t, 0, numberedOK)
	c := newTestClient(t, f.address(), Options{Sessions: 1, ChunkSize: MinChunkSize})
	scanOK(t, c, []byte("small"))
	// More than one chunk: not on the kept session, which clamd might
	// have dropped with part of the artifact already consumed.
	large := randomBytes(3*MinChunkSize, 1)
	scanOK(t, c, large)
	if n := f.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: the large artifact on its own", n)
	}
	scanOK(t, c, []byte("small again"))
	if n := f.conns.Load(); n != 2 {
		t.Errorf("%d connections after a third scan, want a kept session reused", n)
	}
	if got := f.contents(); len(got) != 3 || got[1] != string(large) {
		t.Errorf("clamd did not see the large artifact whole")
	}
}

func TestSessionRepliesMustCarryTheirNumber(t *testing.T) {
	for name, reply := range map[string]string{
		"another command's number": "2: stream: OK\x00",
		"no number":                "stream: OK\x00",
	} {
		t.Run(name, func(t *testing.T) {
			f := startSessionFake(t, 0, func(int, []byte) string { return reply })
			c := newTestClient(t, f.address(), Options{Sessions: 1})
			r, err := c.Instream(testContext(t), strings.NewReader("x"))
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("Instream = %+v, %v; want ErrProtocol", r, err)
			}
		})
	}
}

func TestSessionClosedAfterAnythingButAVerdict(t *testing.T) {
	f := startSessionFake(t, 0, func(n int, content []byte) string {
		if string(content) == "bad" {
			return fmt.Sprintf("%d: stream: Can't allocate memory ERROR\x00", n)
		}
		return fmt.Sprintf("%d: stream: OK\x00", n)
	})
	c := newTestClient(t, f.address(), Options{Sessions: 1})
	if _, err := c.Instream(testContext(t), strings.NewReader("bad")); !errors.Is(err, ErrScan) {
		t.Fatalf("err = %v, want ErrScan", err)
	}
	scanOK(t, c, []byte("good"))
	scanOK(t, c, []byte("good"))
	if n := f.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: a new session after the error, then kept", n)
	}
}

func TestCloseHangsUpKeptSessions(t *testing.T) {
	hungUp := make(chan struct{})
	f := startFake(t, func(conn net.Conn) {
		readCommand(conn) // IDSESSION
		readInstream(conn, 0)
		io.WriteString(conn, "1: stream: OK\x00")
		if readCommand(conn) == "" {
			close(hungUp)
		}
	})
	c := newTestClient(t, f.address(), Options{Sessions: 1})
	scanOK(t, c, []byte("x"))
	c.Close()
	select {
	case <-hungUp:
	case <-time.After(5 * time.Second):
		t.Fatal("the kept session is still open after Close")
	}
}

func TestRetryBackoffWhenRefused(t *testing.T) {
	dir, err := os.MkdirTemp("", "retry")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "clamd.sock")
	c := newTestClient(t, "unix://"+sock, Options{Sessions: 1, RetryBackoff: 200 * time.Millisecond})

	// clamd comes back while the client waits to retry: the first dial
	// finds nothing there, and clamd is up before the second connects.
	var dials atomic.Int32
	c.dialer.Control = func(string, string, syscall.RawConn) error {
		if dials.Add(1) == 2 {
			startFakeAt(t, sock, func(conn net.Conn) {
				readCommand(conn)
				readInstream(conn, 0)
				io.WriteString(conn, "1: stream: OK\x00")
			})
		}
		return nil
	}
	scanOK(t, c, []byte("hello"))
	if n := dials.Load(); n != 2 {
		t.Errorf("%d dials, want 2: one refused, one retry", n)
	}

	// Without the time for a pause and a second try, no retry: the
	// deadline (20 s) is less than three pauses (10 s each), and the
	// refusal comes back at once instead of after a pause. (With a 1 s
	// deadline and a 500 ms bound, a loaded machine alone could fail it.)
	os.Remove(sock)
	c2 := newTestClient(t, "unix://"+filepath.Join(dir, "none.sock"), Options{RetryBackoff: 10 * time.Second})
	c2.dialer.Control = func(string, string, syscall.RawConn) error {
		dials.Add(1)
		return nil
	}
	dials.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := c2.Instream(ctx, strings.NewReader("x")); !Retryable(err) {
		t.Errorf("err = %v, want a retryable connection failure", err)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d dials, want 1: no retry", n)
	}
	if elapsed := time.Since(start); elapsed >= 5*time.Second {
		t.Errorf("took %s: it waited to retry without the time to", elapsed)
	}
}

// TestKeptSessionsAgainstClamd checks what session.go relies on, against a
// real clamd: a connection is kept and reused (clamd itself numbers each
// reply with the command's place in its session), a kept session sees a
// signature reload, and a session clamd dropped at its ReadTimeout is
// detected and costs a resend, not a verdict.
func TestKeptSessionsAgainstClamd(t *testing.T) {
	repoSigs, err := devclamd.RepoSignatureDir()
	if err != nil {
		t.Fatal(err)
	}
	sigDir := t.TempDir()
	for _, name := range []string{"microengine.hdb", "microengine.ndb", "microengine.ldb"} {
		b, err := os.ReadFile(filepath.Join(repoSigs, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sigDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := devclamd.StartT(t, devclamd.Options{SignatureDir: sigDir, Config: []string{"ReadTimeout 1"}})
	c := newTestClient(t, d.Address(), Options{Sessions: 1})
	ctx := testContext(t)

	reply, err := c.Instream(ctx, bytes.NewReader(eicar()))
	if err != nil || reply.Status != StatusFound || reply.Session != 1 {
		t.Fatalf("EICAR = %+v, %v; want FOUND as command 1 of a session", reply, err)
	}
	// The same connection, one command after the other: clamd's numbers
	// prove it, whatever the client believes.
	for n := 2; n <= 6; n++ {
		reply, err := c.Instream(ctx, bytes.NewReader([]byte(fmt.Sprintf("clean artifact %d %d", n, time.Now().UnixNano()))))
		if err != nil || reply.Status != StatusOK || reply.Session != n {
			t.Fatalf("scan %d = %+v, %v; want OK as command %d of the kept session", n, reply, err, n)
		}
	}

	// A signature added and reloaded while the session is kept.
	marker := "session-reload-marker-" + fmt.Sprint(time.Now().UnixNano())
	ndb := fmt.Sprintf("MicroEngine.Test.SessionReload:0:*:%x\n", marker)
	if err := os.WriteFile(filepath.Join(sigDir, "reload.ndb"), []byte(ndb), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	// Asked on the kept session itself until the reload takes: waiting on
	// another connection left this one idle for as long as the reload
	// took, and clamd hangs up on it after ReadTimeout (1 s), which a
	// loaded machine can reach.
	content := []byte("text with a " + marker + " in it")
	for n := 7; ; n++ {
		reply, err = c.Instream(ctx, bytes.NewReader(content))
		if err != nil || reply.Session != n {
			t.Fatalf("scan %d, waiting for the reload = %+v, %v; want an answer as command %d of the kept session", n, reply, err, n)
		}
		if reply.Status == StatusFound {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the reload never reached the kept session: %+v", reply)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if reply.Signature != "MicroEngine.Test.SessionReload.UNOFFICIAL" {
		t.Errorf("kept session after a reload = %+v; want the new signature", reply)
	}

	// Idle past clamd's ReadTimeout: clamd hangs up on the kept session,
	// which is still in the pool and young enough to be reused.
	waitHungUp(ctx, t, c)
	reply, err = c.Instream(ctx, bytes.NewReader(eicar()))
	if err != nil || reply.Status != StatusFound || reply.Session != 1 {
		t.Errorf("after clamd dropped the session = %+v, %v; want FOUND as command 1 of a new session", reply, err)
	}
}

// waitHungUp waits until clamd has hung up on (or sent its timeout notice
// to) the one idle session in c's pool, without reading from it.
func waitHungUp(ctx context.Context, t *testing.T, c *Client) {
	t.Helper()
	c.sessions.mu.Lock()
	if len(c.sessions.idle) != 1 {
		c.sessions.mu.Unlock()
		t.Fatalf("%d idle sessions, want the one kept session", len(c.sessions.idle))
	}
	conn := c.sessions.idle[0].conn
	c.sessions.mu.Unlock()
	raw, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for {
		var rerr error
		err := raw.Control(func(fd uintptr) {
			_, _, rerr = syscall.Recvfrom(int(fd), make([]byte, 1), syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		})
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(rerr, syscall.EAGAIN) {
			return // a notice to read, or the end of the connection
		}
		if ctx.Err() != nil {
			t.Fatal("clamd never hung up on the idle session")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
