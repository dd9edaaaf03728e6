package conformance

import (
	"bytes"
	"io"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// tailBuffer keeps the last lines written to it, so a crash can be
// reported with the plugin's last words without keeping its whole log.
type tailBuffer struct {
	mu      sync.Mutex
	lines   []string
	partial []byte
	max     int
}

const (
	tailLines    = 40
	tailLineSize = 400
)

func newTailBuffer() *tailBuffer { return &tailBuffer{max: tailLines} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	data := append(t.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		t.push(string(data[:i]))
		data = data[i+1:]
	}
	if len(data) > tailLineSize {
		t.push(string(data))
		data = nil
	}
	t.partial = append([]byte(nil), data...)
	return len(p), nil
}

func (t *tailBuffer) push(line string) {
	line = strings.TrimRight(line, "\r")
	if len(line) > tailLineSize {
		line = line[:tailLineSize] + "…"
	}
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

// Last returns up to n of the last lines.
func (t *tailBuffer) Last(n int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n > len(t.lines) {
		n = len(t.lines)
	}
	return append([]string(nil), t.lines[len(t.lines)-n:]...)
}

// stdoutCapture records what a plugin writes to stdout after its
// handshake (go-plugin forwards it over its stdio stream): the first bytes
// and the total.
type stdoutCapture struct {
	mu    sync.Mutex
	head  []byte
	total int64
}

const stdoutHead = 512

func (c *stdoutCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += int64(len(p))
	if room := stdoutHead - len(c.head); room > 0 {
		c.head = append(c.head, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (c *stdoutCapture) snapshot() ([]byte, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.head...), c.total
}

// captureLogger is the logger handed to shared.NewClient. It tells the
// plugin's stray stdout apart from its stderr: NewClient asks it for one
// standard writer forced to Warn (SyncStdout) and one forced to Info
// (SyncStderr), and the Warn one is teed into the stdout capture. The
// conformance tests' "chatty" plugin fails if that coupling ever breaks.
type captureLogger struct {
	hclog.Logger
	stdout io.Writer
}

func newCaptureLogger(out io.Writer, level hclog.Level, stdout io.Writer) hclog.Logger {
	return &captureLogger{
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:   "conformance",
			Output: out,
			Level:  level,
		}),
		stdout: stdout,
	}
}

func (l *captureLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	w := l.Logger.StandardWriter(opts)
	if opts != nil && opts.ForceLevel == hclog.Warn {
		return io.MultiWriter(l.stdout, w)
	}
	return w
}
