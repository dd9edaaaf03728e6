package scanner

import (
	"bytes"
	"io"
)

// plainTextMax is the largest artifact judged plain text. A clamd that
// skips content silently still examines a small text file whole: clamd
// unpacks nothing in it, and every MaxFileSize a clamd ships with is far
// above 1 MiB (Debian's is 25M).
const plainTextMax = 1 << 20

// containerMarkers are encodings clamd unpacks from text: MIME mail and
// its parts, uuencode, BinHex, PDF, RTF and data URIs. Text holding one is
// a container, where a silent skip can hide a payload. Matched in lower
// case.
func containerMarkers() [][]byte {
	return [][]byte{
		[]byte("content-type:"),
		[]byte("content-transfer-encoding"),
		[]byte("mime-version:"),
		[]byte("\nbegin "),
		[]byte("(this file must be converted with binhex"),
		[]byte("%pdf"),
		[]byte("{\\rtf"),
		[]byte(";base64,"),
	}
}

// markerOverlap keeps the end of one read for the next, so a marker split
// across reads is still seen.
const markerOverlap = 48

// textSniffer passes content through and finds out whether it is plain
// text that clamd cannot have skipped any of: at most plainTextMax bytes,
// no control bytes but whitespace and ESC, and no encoding clamd unpacks.
// It is used only for a clamd that was shown to skip content silently, so
// the usual scan pays nothing for it.
type textSniffer struct {
	r       io.Reader
	n       int64
	plain   bool
	tail    []byte // the last bytes of the previous read, lower case
	lower   []byte
	markers [][]byte
}

func newTextSniffer(r io.Reader) *textSniffer {
	// A leading newline lets "\nbegin " match at the very start.
	return &textSniffer{r: r, plain: true, tail: []byte{'\n'}, markers: containerMarkers()}
}

func (s *textSniffer) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 && s.plain {
		s.look(p[:n])
	}
	s.n += int64(n)
	if s.n > plainTextMax {
		s.plain = false
	}
	return n, err
}

func (s *textSniffer) look(b []byte) {
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != 0x1b || c == 0x7f {
			s.plain = false
			return
		}
	}
	s.lower = append(append(s.lower[:0], s.tail...), bytes.ToLower(b)...)
	for _, m := range s.markers {
		if bytes.Contains(s.lower, m) {
			s.plain = false
			return
		}
	}
	keep := min(markerOverlap, len(s.lower))
	s.tail = append(s.tail[:0], s.lower[len(s.lower)-keep:]...)
}

// isPlain reports whether everything read so far was plain text.
func (s *textSniffer) isPlain() bool { return s.plain }
