package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

const (
	adminSocketName = "admin.sock"

	// maxUnixSocketPath is the longest socket path bind(2) takes on every
	// platform we care about (sun_path is 104 bytes on macOS and the BSDs,
	// 108 on Linux, NUL included). Longer paths fail at startup with a bare
	// "invalid argument", so they are caught here with a line number.
	maxUnixSocketPath = 103
)

var (
	logLevels  = []string{"trace", "debug", "info", "warn", "error"}
	rootSchema = &hcl.BodySchema{
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "engine"},
			{Type: "plugin", LabelNames: []string{"name"}},
			{Type: "marketplace"},
			{Type: "cache"},
			{Type: "queue"},
		},
	}
	engineSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "data_dir"},
			{Name: "log_level"},
			{Name: "concurrency"},
			{Name: "swap"},
			{Name: "health_interval"},
			{Name: "drain_timeout"},
			{Name: "admin"},
			{Name: "malicious_quorum"},
		},
	}
)

// Load reads and decodes an engine.hcl. Relative paths in it are resolved
// against its folder; filename itself is kept as given, so diagnostics name
// the file the way the user wrote it.
//
// The returned Config is never nil. When diags has errors it is partial and
// only its Files are meant to be used, to print the diagnostics with
// WriteDiagnostics.
func Load(filename string) (*Config, hcl.Diagnostics) {
	src, err := os.ReadFile(filename)
	if err != nil {
		return &Config{Filename: filename, Files: map[string]*hcl.File{}}, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "cannot read the configuration file",
			Detail:   fmt.Errorf("read config: %w", err).Error(),
		}}
	}
	return Parse(src, filename)
}

// Parse decodes src as if read from filename (which places relative paths
// and names the file in diagnostics). The file is not read.
func Parse(src []byte, filename string) (*Config, hcl.Diagnostics) {
	cfg := &Config{Filename: filename, Files: map[string]*hcl.File{}}
	dir, err := filepath.Abs(filepath.Dir(filename))
	if err != nil {
		return cfg, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "cannot resolve the configuration file's folder",
			Detail:   fmt.Errorf("resolve %s: %w", filename, err).Error(),
		}}
	}
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if file != nil {
		cfg.Files[filename] = file
	}
	if diags.HasErrors() {
		// A syntax error leaves the body half built: decoding it would only
		// add confusing follow-on faults.
		sortDiagnostics(diags)
		return cfg, diags
	}

	d := &decoder{ctx: NewEvalContext(dir), dir: dir, diags: diags}
	cfg.evalCtx = d.ctx
	d.decodeRoot(file.Body, cfg)
	sortDiagnostics(d.diags)
	return cfg, d.diags
}

// EvalContext is the context the file was decoded with (see NewEvalContext),
// to decode plugin bodies later with the same functions.
func (c *Config) EvalContext() *hcl.EvalContext {
	if c.evalCtx != nil {
		return c.evalCtx
	}
	// A Config built by hand (in tests, say): same functions, paths from
	// the file's folder.
	return NewEvalContext(absDir(c.Filename))
}

// absDir is the absolute folder of filename, or its folder as written when
// the working directory cannot be found.
func absDir(filename string) string {
	dir, err := filepath.Abs(filepath.Dir(filename))
	if err != nil {
		return filepath.Dir(filename)
	}
	return dir
}

func (d *decoder) decodeRoot(body hcl.Body, cfg *Config) {
	content, diags := body.Content(rootSchema)
	d.structural(diags, "")

	var engine, market, cache, queue *hcl.Block
	var plugins []*hcl.Block
	for _, b := range content.Blocks {
		switch b.Type {
		case "engine":
			if d.once(b, engine) {
				engine = b
			}
		case "marketplace":
			if d.once(b, market) {
				market = b
			}
		case "cache":
			if d.once(b, cache) {
				cache = b
			}
		case "queue":
			if d.once(b, queue) {
				queue = b
			}
		case "plugin":
			plugins = append(plugins, b)
		}
	}

	cfg.Engine = d.decodeEngine(engine)
	cfg.Plugins = d.decodePlugins(plugins)
	d.checkQuorum(cfg)
	if market != nil {
		cfg.Marketplace = d.decodeMarketplace(market)
	}
	cfg.Cache = d.decodeCache(cache)
	if queue != nil {
		cfg.Queue = d.decodeQueue(queue)
	}
}

// checkQuorum refuses a malicious_quorum that the enabled plugins cannot
// reach: no verdict could ever be malicious.
func (d *decoder) checkQuorum(cfg *Config) {
	if d.quorum == nil {
		return
	}
	n := 0
	for _, p := range cfg.Plugins {
		if p.Enabled {
			n++
		}
	}
	if cfg.Engine.MaliciousQuorum > n {
		d.errorf(d.quorum.Expr.Range(), fmt.Sprintf("engine.malicious_quorum: %d is more than the %d enabled plugins", cfg.Engine.MaliciousQuorum, n),
			"No artifact could ever be answered malicious. Lower the quorum or enable more plugins.")
	}
}

// once reports whether b is the first block of its type; a repeat is an
// error at the repeat, naming the line of the first.
func (d *decoder) once(b, first *hcl.Block) bool {
	if first == nil {
		return true
	}
	d.errorf(b.DefRange, fmt.Sprintf("duplicate %s block", b.Type),
		fmt.Sprintf("Only one %s block is allowed; the first is at %s.", b.Type, shortPos(first.DefRange)))
	return false
}

// shortPos is "FILE:LINE", to mention another block's place in a detail.
func shortPos(r hcl.Range) string {
	return fmt.Sprintf("%s:%d", r.Filename, r.Start.Line)
}

// abs resolves p against the config file's folder.
func (d *decoder) abs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(d.dir, p)
}

func (d *decoder) decodeEngine(b *hcl.Block) Engine {
	e := Engine{
		DataDir:         d.abs(DefaultDataDir),
		LogLevel:        DefaultLogLevel,
		Concurrency:     DefaultConcurrency,
		Swap:            DefaultSwap,
		HealthInterval:  DefaultHealthInterval,
		DrainTimeout:    DefaultDrainTimeout,
		MaliciousQuorum: DefaultMaliciousQuorum,
	}
	if b == nil {
		e.Admin, e.AdminNetwork = filepath.Join(e.DataDir, adminSocketName), "unix"
		if len(e.Admin) > maxUnixSocketPath {
			d.diags = append(d.diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "engine.admin: the default admin socket path is too long",
				Detail:   socketTooLong(e.Admin),
			})
		}
		return e
	}
	content, diags := b.Body.Content(engineSchema)
	d.structural(diags, "engine")
	a := content.Attributes

	if s, st := d.str(a["data_dir"], "engine.data_dir"); st == valid {
		if s == "" {
			d.errorf(a["data_dir"].Expr.Range(), "engine.data_dir: must not be empty", "")
		} else {
			e.DataDir = d.abs(s)
		}
	}
	if s, st := oneOf(d, a["log_level"], "engine.log_level", logLevels...); st == valid {
		e.LogLevel = s
	}
	if n, st := d.integer(a["concurrency"], "engine.concurrency", 1); st == valid {
		e.Concurrency = n
	}
	if s, st := oneOf(d, a["swap"], "engine.swap", swapModes...); st == valid {
		e.Swap = s
	}
	if v, st := d.duration(a["health_interval"], "engine.health_interval", true); st == valid {
		e.HealthInterval = v
	}
	if v, st := d.duration(a["drain_timeout"], "engine.drain_timeout", true); st == valid {
		e.DrainTimeout = v
	}
	if n, st := d.integer(a["malicious_quorum"], "engine.malicious_quorum", 1); st == valid {
		e.MaliciousQuorum = n
		d.quorum = a["malicious_quorum"]
	}

	// The admin socket: where a too-long path is reported depends on what
	// made it long.
	e.Admin, e.AdminNetwork = filepath.Join(e.DataDir, adminSocketName), "unix"
	blame := b.DefRange
	if attr := a["data_dir"]; attr != nil {
		blame = attr.Expr.Range()
	}
	if attr := a["admin"]; attr != nil {
		blame = attr.Expr.Range()
		if s, st := d.str(attr, "engine.admin"); st == valid {
			e.Admin, e.AdminNetwork = d.admin(attr, s)
		}
	}
	if e.AdminNetwork == "unix" && len(e.Admin) > maxUnixSocketPath {
		d.errorf(blame, "engine.admin: the admin socket path is too long", socketTooLong(e.Admin))
	}
	return e
}

func socketTooLong(p string) string {
	return fmt.Sprintf("The unix socket %s is %d bytes long; sockets are limited to %d. Set engine.admin to a shorter path (or a loopback host:port), or move engine.data_dir.", p, len(p), maxUnixSocketPath)
}

// admin reads the admin endpoint. A value starting with unix://, with a path
// separator, or with no colon, is a unix socket path (made absolute, so the
// admin package's "starts with /" test holds); anything else must be a
// loopback host:port, because the admin endpoint has no authentication of
// its own.
func (d *decoder) admin(attr *hcl.Attribute, s string) (string, string) {
	rng := attr.Expr.Range()
	if s == "" {
		d.errorf(rng, "engine.admin: must not be empty", "")
		return "", ""
	}
	if p, ok := strings.CutPrefix(s, "unix://"); ok {
		if p == "" {
			d.errorf(rng, "engine.admin: the unix socket path is empty", "")
			return "", ""
		}
		return d.abs(p), "unix"
	}
	if strings.ContainsRune(s, '/') || strings.ContainsRune(s, filepath.Separator) || !strings.Contains(s, ":") {
		return d.abs(s), "unix"
	}
	host, _, ok := d.hostPort(rng, "engine.admin", s)
	if !ok {
		return "", ""
	}
	if !isLoopback(host) {
		d.errorf(rng, fmt.Sprintf("engine.admin: %q is not a loopback address", s),
			`The admin endpoint has no authentication: give it a unix socket path or a loopback address such as "127.0.0.1:9090".`)
		return "", ""
	}
	return s, "tcp"
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostPort checks a host:port (host may be empty, meaning every address;
// port 0 asks the system for a free port, which tests use).
func (d *decoder) hostPort(rng hcl.Range, name, s string) (string, string, bool) {
	host, port, err := net.SplitHostPort(s)
	if err == nil {
		// Digits only: a service name ("http") would depend on the
		// machine's /etc/services.
		if n, perr := strconv.Atoi(port); perr != nil || n < 0 || n > 65535 || strings.Trim(port, "0123456789") != "" {
			err = fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
	}
	if err == nil && strings.ContainsAny(host, " \t/") {
		err = fmt.Errorf("host %q is not a host name or address", host)
	}
	if err != nil {
		d.errorf(rng, fmt.Sprintf("%s: invalid address %q", name, s),
			fmt.Sprintf("Want host:port, such as \"127.0.0.1:8080\" or \":8080\": %v.", err))
		return "", "", false
	}
	return host, port, true
}
