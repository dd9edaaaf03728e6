// Package admin is the running engine's local control endpoint: what
// `microengine plugins` and `microengine reload` ask. It listens on a unix
// socket under the data directory (or a loopback address), never on the
// webhook listener.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microengine/microengine/host/pluginmgr"
)

// Report is what a running engine says about itself.
type Report struct {
	PID       int                `json:"pid"`
	StartedAt time.Time          `json:"started_at"`
	Config    string             `json:"config"`
	Plugins   []pluginmgr.Status `json:"plugins"`
}

// ReloadReport is the outcome of a reload.
type ReloadReport struct {
	OK      bool               `json:"ok"`
	Error   string             `json:"error,omitempty"`
	Plugins []pluginmgr.Status `json:"plugins"`
}

// Engine is what the endpoint needs from the running engine.
type Engine interface {
	Status() []pluginmgr.Status
	Reload(ctx context.Context) error
}

// BountyLister is implemented by an engine that takes part in the
// marketplace: it lists the stored bounties (newest first when asked), each
// as a JSON-encodable record, until fn returns false.
type BountyLister interface {
	ListBounties(newestFirst bool, fn func(record any) bool) error
}

// Serve answers admin requests on addr until ctx is done.
func Serve(ctx context.Context, addr, configPath string, eng Engine, log hclog.Logger) error {
	ln, err := listen(addr)
	if err != nil {
		return err
	}
	started := time.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/plugins", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, Report{PID: os.Getpid(), StartedAt: started, Config: configPath, Plugins: eng.Status()})
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		rep := ReloadReport{OK: true}
		if err := eng.Reload(r.Context()); err != nil {
			rep.OK, rep.Error = false, err.Error()
		}
		rep.Plugins = eng.Status()
		code := http.StatusOK
		if !rep.OK {
			code = http.StatusConflict
		}
		writeJSON(w, code, rep)
	})
	if lister, ok := eng.(BountyLister); ok {
		// JSON lines, streamed: the audit trail can be long.
		mux.HandleFunc("GET /v1/bounties", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			enc := json.NewEncoder(w)
			var werr error
			err := lister.ListBounties(r.URL.Query().Get("order") != "oldest", func(rec any) bool {
				werr = enc.Encode(rec)
				return werr == nil
			})
			if err != nil && werr == nil {
				// Headers are gone; a final line tells the client it is cut.
				_ = enc.Encode(map[string]string{"error": err.Error()})
			}
		})
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("admin endpoint listening", "addr", addr)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin endpoint: %w", err)
	}
	return nil
}

func isUnix(addr string) bool {
	return strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, ".") || strings.HasPrefix(addr, "unix://")
}

func listen(addr string) (net.Listener, error) {
	if !isUnix(addr) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("admin address %q: %w", addr, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("admin address %q: must be a unix socket or a loopback address", addr)
		}
		return net.Listen("tcp", addr)
	}
	path := strings.TrimPrefix(addr, "unix://")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket folder: %w", err)
	}
	// A socket left by a crashed engine blocks the bind; if nothing answers
	// on it, it is stale.
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin socket %s: another engine is running with this data directory", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Client talks to a running engine's admin endpoint.
type Client struct {
	http *http.Client
	base string
}

// ErrNotRunning means no engine answers at the admin address.
var ErrNotRunning = errors.New("no engine is running")

// NewClient returns a client for addr (a unix socket path or host:port).
func NewClient(addr string) *Client {
	tr := &http.Transport{}
	base := "http://" + addr
	if isUnix(addr) {
		path := strings.TrimPrefix(addr, "unix://")
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		base = "http://engine"
	}
	return &Client{http: &http.Client{Transport: tr}, base: base}
}

// Plugins asks the running engine what it runs.
func (c *Client) Plugins(ctx context.Context) (Report, error) {
	var rep Report
	err := c.do(ctx, http.MethodGet, "/v1/plugins", &rep)
	return rep, err
}

// Reload asks the running engine to re-read engine.hcl.
func (c *Client) Reload(ctx context.Context) (ReloadReport, error) {
	var rep ReloadReport
	err := c.do(ctx, http.MethodPost, "/v1/reload", &rep)
	return rep, err
}

// Bounties streams the running engine's stored bounties to fn, one JSON
// record at a time, newest first unless oldestFirst.
func (c *Client) Bounties(ctx context.Context, oldestFirst bool, fn func(json.RawMessage) bool) error {
	order := "newest"
	if oldestFirst {
		order = "oldest"
	}
	resp, err := c.send(ctx, http.MethodGet, "/v1/bounties?order="+order)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin bounties: %s (is the engine taking part in the marketplace?)", resp.Status)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("admin bounties: %w", err)
		}
		var cut struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &cut) == nil && cut.Error != "" {
			return fmt.Errorf("admin bounties: %s", cut.Error)
		}
		if !fn(raw) {
			return nil
		}
	}
}

// send makes one request; a refused dial means no engine is running.
func (c *Client) send(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("%w: %v", ErrNotRunning, err)
		}
		return nil, fmt.Errorf("admin %s %s: %w", method, path, err)
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	resp, err := c.send(ctx, method, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("admin %s %s: %w", method, path, err)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("admin %s %s: status %s: %w", method, path, resp.Status, err)
	}
	return nil
}
