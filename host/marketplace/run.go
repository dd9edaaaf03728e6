package marketplace

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ListenAddrFile is written under the data directory with the address the
// engine listens on (host:port), so scripts and tests can find an engine
// started with listen = "127.0.0.1:0". It is removed on a clean exit.
const ListenAddrFile = "listen.addr"

// MetricsAddrFile is written under the data directory with the address
// /metrics is served on, like ListenAddrFile.
const MetricsAddrFile = "metrics.addr"

// maxHeaderBytes bounds a webhook request's headers.
const maxHeaderBytes = 16 << 10

// httpShutdownTimeout bounds waiting for webhook requests in progress.
const httpShutdownTimeout = 5 * time.Second

// Run takes part in the marketplace until ctx is cancelled: it listens,
// resumes stored bounties, serves webhooks, and on cancellation stops
// taking webhooks, answers what it can within the shutdown grace, closes
// the store and returns. The caller stops the plugins after Run returns.
func Run(ctx context.Context, opts Options) error {
	s, err := New(opts)
	if err != nil {
		return err
	}
	if opts.OnStore != nil {
		opts.OnStore(s.store)
	}
	if !s.opts.Role.webhooks() {
		return runWorker(ctx, s)
	}
	var tlsCfg *tls.Config
	if s.cfg.TLSCert != "" || s.cfg.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			s.store.Close()
			return fmt.Errorf("marketplace: load TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		s.store.Close()
		return fmt.Errorf("marketplace: listen on %s: %w", s.cfg.Listen, err)
	}
	ln = newLimitListener(ln, s.cfg.MaxConnections, tlsCfg == nil, s.log)
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	addr := ln.Addr().String()
	addrFile := filepath.Join(opts.DataDir, ListenAddrFile)
	if err := writeFileAtomic(addrFile, []byte(addr+"\n")); err != nil {
		s.log.Warn("cannot write the listen address file", "file", addrFile, "error", err)
	}
	defer os.Remove(addrFile)
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	s.log.Info("listening for marketplace webhooks", "addr", addr, "url", scheme+"://"+addr+"/")
	if opts.OnListen != nil {
		opts.OnListen(addr)
	}

	metricsSrv, err := s.serveMetrics(ctx)
	if err != nil {
		ln.Close()
		s.store.Close()
		return err
	}
	srv := &http.Server{
		Handler:           limitConns(s.Handler()),
		ConnContext:       withConn,
		ReadHeaderTimeout: 10 * time.Second,
		// Go's default is 1 MiB of headers per request, read before any
		// handler runs: a webhook's headers are a few hundred bytes.
		MaxHeaderBytes: maxHeaderBytes,
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   30 * time.Second,
		IdleTimeout:    2 * time.Minute,
		ErrorLog:       s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	s.Start()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	var serveErr error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down: no more webhooks; finishing in-flight bounties", "grace", s.opts.ShutdownGrace)
	case serveErr = <-served:
		s.log.Error("webhook server stopped", "error", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("webhook requests still open at shutdown", "error", err)
	}
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	if err := s.Stop(); err != nil {
		return fmt.Errorf("marketplace: close the bounty store: %w", err)
	}
	s.log.Info("marketplace stopped")
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("marketplace: serve: %w", serveErr)
	}
	return nil
}

// writeFileAtomic writes via a temp file and a rename, so a reader never
// sees a half-written address.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

// serveMetrics serves /metrics on metrics_listen, apart from the webhook
// port. The default address is taken only when it is free (a second
// engine on the machine runs without); a configured one must be.
func (s *Service) serveMetrics(ctx context.Context) (*http.Server, error) {
	addr := s.cfg.MetricsListen
	if addr == "" || addr == "off" {
		return nil, nil
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		if s.cfg.MetricsListenSet {
			return nil, fmt.Errorf("marketplace: metrics_listen %s: %w", addr, err)
		}
		s.log.Warn("cannot serve /metrics on the default address: running without (set metrics_listen)", "addr", addr, "error", err)
		return nil, nil
	}
	ln = newLimitListener(ln, 16, true, s.log)
	addr = ln.Addr().String()
	addrFile := filepath.Join(s.opts.DataDir, MetricsAddrFile)
	if err := writeFileAtomic(addrFile, []byte(addr+"\n")); err != nil {
		s.log.Warn("cannot write the metrics address file", "file", addrFile, "error", err)
	}
	s.log.Info("serving metrics", "addr", addr, "url", "http://"+addr+"/metrics")
	srv := &http.Server{
		Handler:           limitConns(s.MetricsHandler()),
		ConnContext:       withConn,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	go func() {
		defer os.Remove(addrFile)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server stopped", "error", err)
		}
	}()
	return srv, nil
}

// runWorker runs a worker-only engine: no webhook listener, the workers
// answer what the webhook engines store in the shared queue.
func runWorker(ctx context.Context, s *Service) error {
	metricsSrv, err := s.serveMetrics(ctx)
	if err != nil {
		s.store.Close()
		return err
	}
	s.log.Info("worker: answering the bounties stored by the webhook engines")
	s.Start()
	<-ctx.Done()
	s.log.Info("shutting down: finishing in-flight bounties", "grace", s.opts.ShutdownGrace)
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	if err := s.Stop(); err != nil {
		return fmt.Errorf("marketplace: close the bounty store: %w", err)
	}
	s.log.Info("marketplace stopped")
	return nil
}
