package devclamd

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartPingStop(t *testing.T) {
	d := StartT(t, Options{TCP: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if want := "unix://" + d.SocketPath(); d.Address() != want {
		t.Errorf("Address() = %q, want %q", d.Address(), want)
	}
	if !strings.HasPrefix(d.TCPAddress(), "tcp://127.0.0.1:") {
		t.Fatalf("TCPAddress() = %q, want tcp://127.0.0.1:PORT", d.TCPAddress())
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(d.TCPAddress(), "tcp://"))
	if err != nil {
		t.Fatalf("dial clamd over TCP: %v", err)
	}
	io.WriteString(conn, "zPING\x00")
	reply, _ := io.ReadAll(conn)
	conn.Close()
	if string(reply) != "PONG\x00" {
		t.Errorf("PING over TCP answered %q", reply)
	}

	conf, err := os.ReadFile(d.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Foreground yes", "AlertExceedsMax yes", "StreamMaxLength 26214400", "LocalSocket " + d.SocketPath()} {
		if !strings.Contains(string(conf), want+"\n") {
			t.Errorf("clamd.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(string(conf), "\nUser ") || strings.Contains(string(conf), "/var/lib/clamav") {
		t.Errorf("clamd.conf must not drop privileges or use the system database:\n%s", conf)
	}

	if err := d.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-d.Done():
	default:
		t.Fatal("clamd still running after Stop")
	}
	if err := d.Ping(ctx); err == nil {
		t.Error("PING answered after Stop")
	}
	if err := d.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestKillLeavesNoDaemon(t *testing.T) {
	d := StartT(t, Options{})
	d.Kill()
	select {
	case <-d.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("clamd still running after Kill")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := d.Ping(ctx); err == nil {
		t.Error("PING answered after Kill")
	}
}

func TestStartFailsOnEmptyDatabase(t *testing.T) {
	_, err := Start(context.Background(), Options{Dir: t.TempDir(), SignatureDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "no clamd database file") {
		t.Fatalf("Start with an empty signature folder: err = %v, want a no-database error", err)
	}
}

func TestStartReportsClamdExit(t *testing.T) {
	// An option clamd does not know makes it exit at once; Start must say
	// so rather than wait out its timeout.
	start := time.Now()
	_, err := Start(context.Background(), Options{Dir: t.TempDir(), Config: []string{"NoSuchClamdOption yes"}})
	if err == nil || !strings.Contains(err.Error(), "exited during start") {
		t.Fatalf("err = %v, want clamd's early exit reported", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Start took %s to notice clamd's exit", d)
	}
}

func TestLongDirGetsShortSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("a", 60), strings.Repeat("b", 60))
	d := StartT(t, Options{Dir: dir})
	if len(d.SocketPath()) > maxSocketPath {
		t.Fatalf("socket path %q is %d bytes", d.SocketPath(), len(d.SocketPath()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestConfigLinesOverride(t *testing.T) {
	lines := configLines(Options{StreamMaxLength: 1 << 20, Config: []string{"streammaxlength 2M", "MaxFileSize 1K", "# comment", ""}}, "/sig", "/s.sock", "/tmp", 0)
	got := map[string]string{}
	for _, l := range lines {
		if _, dup := got[strings.ToLower(l[0])]; dup {
			t.Errorf("option %s written twice", l[0])
		}
		got[strings.ToLower(l[0])] = l[1]
	}
	if got["streammaxlength"] != "2M" || got["maxfilesize"] != "1K" {
		t.Errorf("overrides not applied: %v", got)
	}
}

func TestRepoSignatureDir(t *testing.T) {
	dir, err := RepoSignatureDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkSignatureDir(dir); err != nil {
		t.Fatal(err)
	}
}
