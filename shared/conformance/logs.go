package conformance

import (
	"bytes"
	"fmt"
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

// add records one line.
func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.push(line)
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

// captureLogger is the logger handed to launch.NewClient. It logs at the
// configured level to Config.LogOutput, and on the side it keeps:
//
//   - the plugin's own last words at every level (go-plugin re-emits a
//     plugin's stderr through a sub-logger, plain lines at Debug), and
//     go-plugin's note of the exit status, for crash reports;
//   - the plugin's stray stdout: NewClient asks for one standard writer
//     forced to Warn (SyncStdout) and one forced to Info (SyncStderr), and
//     the Warn one is teed into the stdout capture. The conformance tests'
//     "chatty" plugin fails if that coupling ever breaks.
type captureLogger struct {
	hclog.InterceptLogger
	stdout io.Writer
}

const rootLogger = "conformance"

func newCaptureLogger(out io.Writer, level hclog.Level, tail *tailBuffer, stdout io.Writer) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   rootLogger,
		Output: out,
		Level:  level,
	})
	l.RegisterSink(tailSink{tail})
	return &captureLogger{InterceptLogger: l, stdout: stdout}
}

func (l *captureLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	w := l.InterceptLogger.StandardWriter(opts)
	if opts != nil && opts.ForceLevel == hclog.Warn {
		return io.MultiWriter(l.stdout, w)
	}
	return w
}

// tailSink keeps the lines worth quoting when a plugin dies.
type tailSink struct{ tail *tailBuffer }

func (s tailSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	switch {
	case name == rootLogger+".stdio":
		return // go-plugin's own chatter about the stdio stream
	case name == rootLogger && msg != "plugin process exited":
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] %s", strings.ToUpper(level.String()), msg)
	for i := 0; i+1 < len(args); i += 2 {
		if k := fmt.Sprint(args[i]); k != "timestamp" && k != "@module" && k != "plugin" && k != "id" {
			fmt.Fprintf(&b, " %s=%v", k, args[i+1])
		}
	}
	s.tail.add(b.String())
}
