package clamd

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors a call can be matched against with errors.Is. Each comes wrapped
// in an *Error that says which command failed and whether anything had been
// sent.
var (
	// ErrConnect: the connection could not be opened. Nothing was sent, so
	// the call can be repeated (see Retryable).
	ErrConnect = errors.New("cannot connect to clamd")
	// ErrSizeLimit: the stream was longer than allowed, either by clamd's
	// StreamMaxLength ("INSTREAM size limit exceeded") or by the client's
	// own MaxStreamSize, in which case the excess was never sent.
	ErrSizeLimit = errors.New("stream size limit exceeded")
	// ErrCommandTimeout: clamd gave up waiting for the command or the
	// stream's next chunk (its CommandReadTimeout / ReadTimeout).
	ErrCommandTimeout = errors.New("clamd timed out reading the command")
	// ErrScan: clamd answered "stream: ... ERROR": it could not scan.
	ErrScan = errors.New("clamd could not scan the stream")
	// ErrNoReply: the connection ended before clamd sent a complete reply
	// (the daemon died, restarted, or dropped the connection).
	ErrNoReply = errors.New("clamd sent no reply")
	// ErrProtocol: the reply is not one clamd sends. Never read as a
	// verdict.
	ErrProtocol = errors.New("malformed clamd reply")
	// ErrContent: reading the content to stream failed, so clamd was not
	// given the whole artifact.
	ErrContent = errors.New("cannot read the content to scan")
)

// Error is the error every call returns.
type Error struct {
	// Command is the clamd command: INSTREAM, PING, VERSION, STATS.
	Command string
	Address string
	// Sent is false when no byte reached the connection and no content was
	// read: the command can be repeated, with the same reader, without
	// clamd having seen any of it.
	Sent bool
	// ContentBytes is how many bytes of content were sent (INSTREAM).
	ContentBytes int64
	// Reply is the reply as received, when there was one.
	Reply string
	Err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "clamd %s at %s", e.Command, e.Address)
	if e.Command == "INSTREAM" && e.Sent {
		fmt.Fprintf(&b, " (after %d content bytes)", e.ContentBytes)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether err is a failure to connect before any byte was
// sent. That is what a clamd restarting or reloading, or a full listen
// queue, looks like; one more try after a short pause is safe because clamd
// saw nothing and no content was consumed.
func Retryable(err error) bool {
	var ce *Error
	return errors.As(err, &ce) && !ce.Sent && errors.Is(err, ErrConnect)
}

// Status is the outcome of a completed scan.
type Status int

const (
	// StatusOK: clamd examined the stream and found nothing.
	StatusOK Status = iota + 1
	// StatusFound: a signature matched.
	StatusFound
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusFound:
		return "FOUND"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Reply is clamd's answer to a scan that completed.
type Reply struct {
	Status Status
	// Signature is the matched signature's name as clamd reports it
	// (".UNOFFICIAL" included) when Status is StatusFound.
	Signature string
	// Detail is the "(hash:size)" part clamd appends to a name with
	// ExtendedDetectionInfo, without the parentheses.
	Detail string
	// ContentBytes is how many bytes of content were streamed (set by
	// Instream, not by ParseReply).
	ContentBytes int64
	// Session is the number clamd gave the command in its IDSESSION
	// connection: 1 on a new session, n on the nth command of a kept one;
	// 0 outside sessions (set by Instream, not by ParseReply).
	Session int
	// Raw is the reply as received, terminator removed.
	Raw string
}

const (
	streamPrefix     = "stream: "
	foundSuffix      = " FOUND"
	errorSuffix      = " ERROR"
	sizeLimitReply   = "INSTREAM size limit exceeded. ERROR"
	readTimeoutReply = "COMMAND READ TIMED OUT"
	// maxSignatureLen bounds a signature name. ClamAV's own are well under
	// 200 bytes; anything far longer is not a reply clamd sent.
	maxSignatureLen = 1024
)

// ParseReply reads the reply to an INSTREAM command, as received: the
// bytes up to and including the NUL terminator. Only a NUL-terminated
// "stream: OK" or "stream: NAME FOUND" is a verdict; every other reply,
// including a verdict missing its terminator (a truncated reply), is an
// error, so that nothing malformed can pass as OK.
func ParseReply(raw []byte) (Reply, error) {
	if len(raw) == 0 {
		return Reply{}, ErrNoReply
	}
	terminated := raw[len(raw)-1] == 0
	body := raw
	if terminated {
		body = raw[:len(raw)-1]
	}
	// clamd ends its timeout notice with a newline even in z mode.
	text := strings.TrimSuffix(string(body), "\n")
	switch {
	case text == sizeLimitReply:
		return Reply{}, fmt.Errorf("%w: clamd's StreamMaxLength (%q)", ErrSizeLimit, text)
	case text == readTimeoutReply:
		return Reply{}, fmt.Errorf("%w (%q)", ErrCommandTimeout, text)
	}
	if !terminated {
		return Reply{}, fmt.Errorf("%w: reply %s is not NUL-terminated (truncated?)", ErrProtocol, quote(raw))
	}
	if bytes.IndexByte(body, 0) >= 0 || bytes.IndexByte(body, '\n') >= 0 {
		return Reply{}, fmt.Errorf("%w: reply %s holds more than one line", ErrProtocol, quote(raw))
	}
	if !strings.HasPrefix(text, streamPrefix) {
		return Reply{}, fmt.Errorf("%w: %s", ErrProtocol, quote(raw))
	}
	rest := text[len(streamPrefix):]
	switch {
	case rest == "OK":
		return Reply{Status: StatusOK, Raw: text}, nil
	case strings.HasSuffix(rest, foundSuffix):
		name, detail, err := parseSignature(rest[:len(rest)-len(foundSuffix)])
		if err != nil {
			return Reply{}, fmt.Errorf("%w: %s: %w", ErrProtocol, quote(raw), err)
		}
		return Reply{Status: StatusFound, Signature: name, Detail: detail, Raw: text}, nil
	case strings.HasSuffix(rest, errorSuffix):
		msg := strings.TrimSpace(rest[:len(rest)-len(errorSuffix)])
		if strings.Contains(msg, "size limit exceeded") {
			return Reply{}, fmt.Errorf("%w: %q", ErrSizeLimit, text)
		}
		return Reply{}, fmt.Errorf("%w: %q", ErrScan, text)
	}
	return Reply{}, fmt.Errorf("%w: %s", ErrProtocol, quote(raw))
}

// parseSignature checks a signature name: printable ASCII, no blanks at the
// edges, with an optional "(hash:size)" detail from ExtendedDetectionInfo.
func parseSignature(s string) (name, detail string, err error) {
	if s == "" {
		return "", "", errors.New("empty signature name")
	}
	if len(s) > maxSignatureLen {
		return "", "", fmt.Errorf("signature name longer than %d bytes", maxSignatureLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return "", "", fmt.Errorf("signature name has byte 0x%02x", s[i])
		}
	}
	if strings.TrimSpace(s) != s {
		return "", "", errors.New("signature name has leading or trailing blanks")
	}
	name = s
	if strings.HasSuffix(s, ")") {
		if open := strings.LastIndexByte(s, '('); open > 0 {
			if d := s[open+1 : len(s)-1]; isHashDetail(d) {
				name, detail = s[:open], d
			}
		}
	}
	if strings.ContainsAny(name, " \t") {
		// Names never hold blanks; "stream: a b FOUND" is not a reply.
		return "", "", errors.New("signature name contains blanks")
	}
	return name, detail, nil
}

// isHashDetail matches ExtendedDetectionInfo's "hexhash:size".
func isHashDetail(d string) bool {
	hash, size, ok := strings.Cut(d, ":")
	if !ok || hash == "" || size == "" {
		return false
	}
	for _, c := range hash {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	_, err := strconv.ParseUint(size, 10, 64)
	return err == nil
}

func quote(raw []byte) string {
	const max = 200
	if len(raw) > max {
		return strconv.Quote(string(raw[:max])) + "..."
	}
	return strconv.Quote(string(raw))
}

// Version is clamd's answer to VERSION.
type Version struct {
	// Product is "ClamAV".
	Product string
	// Engine is the engine version, e.g. "1.4.6".
	Engine string
	// Database is the daily signature database version, e.g. "27431". It
	// is empty when clamd runs without an official database.
	Database string
	// DatabaseTime is when that database was built; zero when absent or
	// unreadable.
	DatabaseTime time.Time
	Raw          string
}

// clamdTimeLayout is the asctime-style time VERSION reports.
const clamdTimeLayout = "Mon Jan _2 15:04:05 2006"

// ParseVersion reads "ClamAV 1.4.6/27431/Tue Nov 24 09:00:00 2026" or,
// without an official database, "ClamAV 1.4.6".
func ParseVersion(s string) (Version, error) {
	raw := strings.TrimRight(s, "\x00\n")
	parts := strings.SplitN(raw, "/", 3)
	product, engine, ok := strings.Cut(parts[0], " ")
	if !ok || product == "" || engine == "" || strings.ContainsAny(engine, " \t") {
		return Version{}, fmt.Errorf("%w: VERSION reply %q is not \"PRODUCT ENGINE[/DB/DATE]\"", ErrProtocol, s)
	}
	v := Version{Product: product, Engine: engine, Raw: raw}
	if len(parts) > 1 {
		v.Database = strings.TrimSpace(parts[1])
		if _, err := strconv.ParseUint(v.Database, 10, 64); err != nil {
			return Version{}, fmt.Errorf("%w: VERSION reply %q: database version %q is not a number", ErrProtocol, s, v.Database)
		}
	}
	if len(parts) > 2 {
		if t, err := time.Parse(clamdTimeLayout, strings.TrimSpace(parts[2])); err == nil {
			v.DatabaseTime = t
		}
	}
	return v, nil
}

// Stats is the part of clamd's STATS report a health check cares about.
type Stats struct {
	State       string
	ThreadsLive int
	ThreadsIdle int
	ThreadsMax  int
	QueueItems  int
	Raw         string
}

// ParseStats reads a STATS report. Only the first pool's figures are kept
// (clamd runs one); missing lines leave zero values, a report without its
// closing END line is an error.
func ParseStats(s string) (Stats, error) {
	raw := strings.TrimRight(s, "\x00")
	lines := strings.Split(strings.TrimRight(raw, "\n"), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[len(lines)-1]) != "END" {
		return Stats{}, fmt.Errorf("%w: STATS report does not end with END", ErrProtocol)
	}
	st := Stats{Raw: raw}
	seen := map[string]bool{}
	for _, line := range lines {
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || seen[key] {
			continue
		}
		seen[key] = true
		f := strings.Fields(val)
		switch key {
		case "STATE":
			st.State = strings.TrimSpace(val)
		case "THREADS":
			// "live 1  idle 0 max 10 idle-timeout 30"
			for i := 0; i+1 < len(f); i += 2 {
				n, _ := strconv.Atoi(f[i+1])
				switch f[i] {
				case "live":
					st.ThreadsLive = n
				case "idle":
					st.ThreadsIdle = n
				case "max":
					st.ThreadsMax = n
				}
			}
		case "QUEUE":
			// "0 items"
			if len(f) > 0 {
				st.QueueItems, _ = strconv.Atoi(f[0])
			}
		}
	}
	return st, nil
}
