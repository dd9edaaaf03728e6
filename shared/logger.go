package shared

import (
	"io"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Logger returns the logger a plugin should use: JSON lines on stderr, which
// the host re-emits under the plugin's name, at the host's level. A plugin
// must never write to stdout: go-plugin's handshake line lives there.
//
// Durations, Sizes and integers are written as text (30s, 25MiB, 26214400):
// go-plugin reads each JSON line into float64s before the host re-emits it,
// so a 30s timeout used to reach the host's log as timeout=3e+10 and 25 MiB
// as 2.62144e+07.
func Logger(name string) hclog.Logger {
	level := hclog.LevelFromString(os.Getenv("MICROENGINE_LOG_LEVEL"))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return newPluginLogger(processStderr, name, level)
}

// processStderr is the process's own stderr, which the host reads log
// entries from, as it was when the program started. Serve points the
// os.Stderr variable at a pipe that go-plugin forwards as raw text, so a
// logger made after Serve (in Configure, say) and writing to os.Stderr
// reached the host's log as the bare JSON line instead of an entry with
// its fields. Set once, before main runs, and never changed. (Not
// os.NewFile(2, …) per logger: a dropped *os.File closes its descriptor.)
var processStderr = os.Stderr

func newPluginLogger(w io.Writer, name string, level hclog.Level) hclog.Logger {
	return pluginLogger{hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Output:     w,
		Level:      level,
		JSONFormat: true,
	})}
}

// pluginLogger writes durations, sizes and integers as text; see Logger.
type pluginLogger struct{ hclog.Logger }

func (l pluginLogger) Log(level hclog.Level, msg string, args ...any) {
	l.Logger.Log(level, msg, textArgs(args)...)
}

// Trace and Debug look at the level first: a plugin's per-artifact debug
// line cost its arguments' conversion at every scan with debug off.
func (l pluginLogger) Trace(msg string, args ...any) {
	if l.Logger.IsTrace() {
		l.Logger.Trace(msg, textArgs(args)...)
	}
}
func (l pluginLogger) Debug(msg string, args ...any) {
	if l.Logger.IsDebug() {
		l.Logger.Debug(msg, textArgs(args)...)
	}
}
func (l pluginLogger) Info(msg string, args ...any)  { l.Logger.Info(msg, textArgs(args)...) }
func (l pluginLogger) Warn(msg string, args ...any)  { l.Logger.Warn(msg, textArgs(args)...) }
func (l pluginLogger) Error(msg string, args ...any) { l.Logger.Error(msg, textArgs(args)...) }

func (l pluginLogger) With(args ...any) hclog.Logger {
	return pluginLogger{l.Logger.With(textArgs(args)...)}
}
func (l pluginLogger) Named(name string) hclog.Logger { return pluginLogger{l.Logger.Named(name)} }
func (l pluginLogger) ResetNamed(name string) hclog.Logger {
	return pluginLogger{l.Logger.ResetNamed(name)}
}

// textArgs returns args with every value that JSON would write as a number
// written as text instead. args is not changed.
func textArgs(args []any) []any {
	var out []any
	for i := 1; i < len(args); i += 2 {
		s, ok := numberText(args[i])
		if !ok {
			continue
		}
		if out == nil {
			out = append([]any(nil), args...)
		}
		out[i] = s
	}
	if out == nil {
		return args
	}
	return out
}

func numberText(v any) (string, bool) {
	switch n := v.(type) {
	case time.Duration:
		return n.String(), true
	case Size:
		return n.String(), true
	case int:
		return strconv.Itoa(n), true
	case int8:
		return strconv.FormatInt(int64(n), 10), true
	case int16:
		return strconv.FormatInt(int64(n), 10), true
	case int32:
		return strconv.FormatInt(int64(n), 10), true
	case int64:
		return strconv.FormatInt(n, 10), true
	case uint:
		return strconv.FormatUint(uint64(n), 10), true
	case uint8:
		return strconv.FormatUint(uint64(n), 10), true
	case uint16:
		return strconv.FormatUint(uint64(n), 10), true
	case uint32:
		return strconv.FormatUint(uint64(n), 10), true
	case uint64:
		return strconv.FormatUint(n, 10), true
	}
	return "", false
}
