package conformance

// Checks that the plugin survives content built to break parsers:
// HOSTILE-001.

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/microengine/microengine/shared"
)

// hostileInput is one piece of content a plugin must survive. Any verdict
// or error will do; the process must still be there afterwards.
type hostileInput struct {
	name    string
	content []byte
}

// Bounds on the inputs derived from samples: enough variants to reach the
// parsing paths a sample leads into, few enough that a backend at ~1 ms a
// scan gets through them in well under a second.
const (
	hostileSamples       = 8       // samples derived from
	hostileSampleMaxSize = 1 << 20 // larger samples are cut first
	hostileFlips         = 6       // byte-flipped variants per sample
)

func checkHostile(ctx context.Context, e *env) outcome {
	s, out, ok := e.fileSession(ctx)
	if !ok {
		return out
	}
	inputs := hostileInputs(e.samples(s))
	// A plugin that takes artifacts by reference may parse a descriptor
	// another way than a stream (mapping the file, say): each input goes
	// both ways then.
	var refDir string
	if s.pluginInfo.ByReference && s.scanner.ByReference() {
		dir, err := os.MkdirTemp("", "conformance-hostile-")
		if err != nil {
			return failf("cannot make a folder for artifact files: %v", err)
		}
		defer os.RemoveAll(dir)
		refDir = dir
	}
	scan := func(s *session, in hostileInput, byRef bool) (string, error) {
		if byRef {
			what := in.name + " (by reference)"
			return what, e.scanFile(ctx, s, refDir, "Scan("+what+")", in.content, e.r.cfg.CallTimeout).err
		}
		_, err := s.scan(ctx, "Scan("+in.name+")", nil, fileArtifact(e.id, in.content), e.r.cfg.CallTimeout)
		return in.name, err
	}
	start := time.Now()
	prev := ""
	for _, in := range inputs {
		for _, byRef := range []bool{false, true} {
			if byRef && refDir == "" {
				continue
			}
			what, err := scan(s, in, byRef)
			if ctx.Err() != nil {
				return failf("interrupted at %s", what)
			}
			if s.exited(ctx) {
				return e.hostileCrash(ctx, s, in, byRef, what, prev, scan)
			}
			if _, tainted := s.state(); tainted != "" {
				return failf("the plugin hung on %s: %v", what, err)
			}
			prev = what
		}
	}
	ways := ""
	if refDir != "" {
		ways = ", each streamed and by reference,"
	}
	return passf("survived %d hostile inputs%s in %s", len(inputs), ways, time.Since(start).Round(time.Millisecond))
}

// hostileCrash reports a crash during the scan of what. The process may
// have died of work an earlier input left behind (a goroutine), so the
// input is scanned again, alone, on a fresh process: only a second crash
// pins it on that input; otherwise the report says so and names the input
// before it.
func (e *env) hostileCrash(ctx context.Context, s *session, in hostileInput, byRef bool, what, prev string,
	scan func(*session, hostileInput, bool) (string, error)) outcome {
	first := s.crashReport()
	e.r.dropSession()
	again, out, ok := e.fileSession(ctx)
	if !ok {
		return crashedf("the plugin crashed on %s: %s (and could not be relaunched to confirm it: %s)", what, first, out.actual)
	}
	_, _ = scan(again, in, byRef)
	if again.exited(ctx) {
		return crashedf("the plugin crashed on %s: %s", what, again.crashReport())
	}
	// The retry may have left the same work behind: the next check
	// starts on a fresh process.
	e.r.dropSession()
	after := ""
	if prev != "" {
		after = ", after " + prev
	}
	return crashedf("the plugin crashed while scanning %s%s, which alone does not crash it (work an earlier input left behind?): %s", what, after, first)
}

// hostileInputs lists what HOSTILE-001 sends: edge sizes, noise, runs of
// one byte, truncated archives and executable headers, and variants of
// the samples (prefixes, duplications, byte flips), which lead a plugin
// into its deepest parsing paths.
func hostileInputs(samples []item) []hostileInput {
	var in []hostileInput
	add := func(name string, b []byte) { in = append(in, hostileInput{name, b}) }

	add("empty content", nil)
	add("1 byte 0x00", []byte{0})
	add("1 byte 0xff", []byte{0xff})
	for _, n := range []int{shared.DefaultChunkSize - 1, shared.DefaultChunkSize, shared.DefaultChunkSize + 1, 2 * shared.DefaultChunkSize} {
		add(fmt.Sprintf("%d bytes of noise (a chunk boundary)", n), noise(n, uint64(n)))
	}
	add("4 KiB of noise", noise(4<<10, 41))
	add("1 MiB of noise", noise(1<<20, 42))
	for _, c := range []byte{0x00, 0xff, 'A', '\n'} {
		add(fmt.Sprintf("1 MiB of byte 0x%02x", c), bytes.Repeat([]byte{c}, 1<<20))
	}
	for _, h := range headerInputs() {
		add(h.name, h.content)
	}
	n := 0
	for _, smp := range samples {
		if len(smp.content) == 0 || n == hostileSamples {
			continue
		}
		n++
		for _, v := range sampleVariants(smp.content, uint64(n)) {
			add(fmt.Sprintf("sample %q %s", smp.name, v.name), v.content)
		}
	}
	return in
}

// headerInputs are files whose first bytes promise a format and whose rest
// breaks the promise: the inputs that crash parsers which trust a header.
func headerInputs() []hostileInput {
	var out []hostileInput
	add := func(name string, b []byte) { out = append(out, hostileInput{name, b}) }

	zipped := zipOf("member.txt", bytes.Repeat([]byte("zip member content "), 64))
	add("a zip cut in half", zipped[:len(zipped)/2])
	add("a zip without its last byte", zipped[:len(zipped)-1])
	add("a zip local header alone", zipped[:30])
	add("a zip end record claiming 65535 entries", zipEndRecord(0xffff, 0xffffffff, 0xfffffff0))
	gz := gzipOf(bytes.Repeat([]byte("gzip content "), 256))
	add("a gzip stream cut in half", gz[:len(gz)/2])
	add("a gzip header alone", gz[:10])
	tarred := tarOf("member.txt", bytes.Repeat([]byte("tar member "), 100))
	add("a tar header without its data", tarred[:512])
	add("a 7z signature alone", []byte("7z\xbc\xaf\x27\x1c\x00\x04"))
	add("a RAR signature alone", []byte("Rar!\x1a\x07\x01\x00"))
	add("an OLE2 header alone", []byte("\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"))
	add("a PDF header alone", []byte("%PDF-1.7\n1 0 obj\n<< /Length 999999 >>\nstream\n"))

	add("the 2 bytes MZ", []byte("MZ"))
	mz := make([]byte, 64)
	copy(mz, "MZ")
	binary.LittleEndian.PutUint32(mz[0x3c:], 0xfffffff0) // e_lfanew far past the end
	add("a DOS header pointing past the end", mz)
	pe := make([]byte, 0x80+6)
	copy(pe, "MZ")
	binary.LittleEndian.PutUint32(pe[0x3c:], 0x80)
	copy(pe[0x80:], "PE\x00\x00\x4c\x01") // cut inside the COFF header
	add("a PE header cut short", pe)

	add("the 4 bytes of the ELF magic", []byte("\x7fELF"))
	add("an ELF identification alone", []byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	elf := make([]byte, 64)
	copy(elf, "\x7fELF\x02\x01\x01")
	binary.LittleEndian.PutUint64(elf[32:], 0xffffffffffff0000) // e_phoff far past the end
	binary.LittleEndian.PutUint16(elf[56:], 0xffff)             // e_phnum
	add("an ELF header pointing past the end", elf)
	add("a Mach-O magic alone", []byte("\xcf\xfa\xed\xfe"))
	return out
}

// sampleVariants are a sample's prefixes, duplications and byte flips.
func sampleVariants(content []byte, seed uint64) []hostileInput {
	if len(content) > hostileSampleMaxSize {
		content = content[:hostileSampleMaxSize]
	}
	var out []hostileInput
	add := func(name string, b []byte) { out = append(out, hostileInput{name, b}) }
	n := len(content)
	add("cut to its first byte", content[:1])
	if n > 2 {
		add("cut in half", content[:n/2])
		add("without its last byte", content[:n-1])
		add("without its first byte", content[1:])
	}
	add("twice over", bytes.Repeat(content, 2))
	add("three times over", bytes.Repeat(content, 3))
	add("followed by noise", append(append([]byte{}, content...), noise(4<<10, seed)...))
	rng := rand.New(rand.NewPCG(seed, 0x686f7374696c65))
	for i := range hostileFlips {
		b := append([]byte{}, content...)
		var at int
		switch i {
		case 0:
			at = 0
		case 1:
			at = n - 1
		default:
			at = rng.IntN(n)
		}
		b[at] ^= 0xff
		add(fmt.Sprintf("with byte %d flipped", at), b)
	}
	return out
}

func zipOf(name string, content []byte) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create(name) // writes to memory: cannot fail
	_, _ = w.Write(content)
	_ = zw.Close()
	return buf.Bytes()
}

// zipEndRecord is a lone end-of-central-directory record with the given
// entry count, directory size and offset.
func zipEndRecord(entries uint16, size, offset uint32) []byte {
	b := make([]byte, 22)
	binary.LittleEndian.PutUint32(b, 0x06054b50)
	binary.LittleEndian.PutUint16(b[8:], entries)
	binary.LittleEndian.PutUint16(b[10:], entries)
	binary.LittleEndian.PutUint32(b[12:], size)
	binary.LittleEndian.PutUint32(b[16:], offset)
	return b
}

func gzipOf(content []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(content)
	_ = zw.Close()
	return buf.Bytes()
}

func tarOf(name string, content []byte) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))})
	_, _ = tw.Write(content)
	_ = tw.Close()
	return buf.Bytes()
}
