package marketplace

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microengine/microengine/host/config"
)

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "engine"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func TestRunTLSAndShutdown(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Config:  &config.Marketplace{Listen: "127.0.0.1:0", WebhookSecrets: []string{testSecret}, TLSCert: cert, TLSKey: key},
			DataDir: filepath.Join(dir, "data"), Scanner: eicarScanner(),
			OnListen: func(a string) { addrs <- a },
		})
	}()
	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "data", ListenAddrFile)); strings.TrimSpace(string(got)) != addr {
		t.Errorf("listen.addr = %q, want %q", got, addr)
	}

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/", nil)
	req.Header.Set(HeaderEvent, "ping")
	req.Header.Set(HeaderSignature, Sign(testSecret, nil))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Errorf("ping over TLS: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := os.Stat(filepath.Join(dir, "data", ListenAddrFile)); !os.IsNotExist(err) {
		t.Errorf("listen.addr left behind: %v", err)
	}
}

func TestRunRefusesBadSetups(t *testing.T) {
	dir := t.TempDir()
	for name, opts := range map[string]Options{
		"no secret":   {Config: &config.Marketplace{Listen: "127.0.0.1:0"}, DataDir: dir, Scanner: eicarScanner()},
		"no scanner":  {Config: &config.Marketplace{Listen: "127.0.0.1:0", WebhookSecrets: []string{"x"}}, DataDir: dir},
		"bad listen":  {Config: &config.Marketplace{Listen: "nowhere", WebhookSecrets: []string{"x"}}, DataDir: dir, Scanner: eicarScanner()},
		"bad cert":    {Config: &config.Marketplace{Listen: "127.0.0.1:0", WebhookSecrets: []string{"x"}, TLSCert: "/nope", TLSKey: "/nope"}, DataDir: dir, Scanner: eicarScanner()},
		"bad filter":  {Config: &config.Marketplace{Listen: "127.0.0.1:0", WebhookSecrets: []string{"x"}, Filters: []config.Filter{{Action: "reject", Field: "f", Op: "regex", Value: "("}}}, DataDir: dir, Scanner: eicarScanner()},
		"no data dir": {Config: &config.Marketplace{Listen: "127.0.0.1:0", WebhookSecrets: []string{"x"}}, Scanner: eicarScanner()},
	} {
		if err := Run(context.Background(), opts); err == nil {
			t.Errorf("%s: Run succeeded", name)
		}
	}
}
