package scanner

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/microengine/microengine/plugins/clamav/clamd"
)

// Probes find out whether a clamd someone else configured answers OK for
// content it skipped. clamd does that under its packaged limits (Debian:
// MaxFileSize 25M, MaxRecursion 16, AlertExceedsMax off), and even with
// AlertExceedsMax for an archive member over MaxFileSize. Padding a payload
// past a scanner's limits is a known evasion, so a benign from such a clamd
// about an archive proves nothing.
//
// Each probe hides the EICAR test file where such a clamd does not look.
// EICAR is detected by every clamd with the official database or the
// project's test signatures (by its hash, so only as a whole file): a clamd
// that answers OK for a probe skipped it silently; FOUND (EICAR, or a
// Heuristics.Limits alert) means it looked or said it could not. The
// probes are built in memory, ~100 KB on the wire each; clamd unpacks
// ~101 MiB for the largest (0.3-2.6 s of its CPU, measured), so they run
// once per connection to a clamd: at configure time and whenever it comes
// back after being down.
//
// What they do not cover: limits set above the probes' reach (a clamd
// with MaxFileSize 200M, MaxScanSize 400M and no alerts skips a 250 MiB
// member and passes the 101 MiB probe). The clamd the plugin runs itself
// is configured safe (package daemon) and is not probed.

// Probe shapes. 64 levels is far above Debian's MaxRecursion (16) and
// clamd's default (17), and above a raised one: with AlertExceedsMax off
// and MaxRecursion 40, a 20-deep probe was found and the marker 40 zips
// deep answered OK (clamd 1.4.6 takes any MaxRecursion; 64 tiny zips cost
// it ~10 ms). 101 MiB is above Debian's MaxFileSize (25M) and clamd's
// default (100M).
const (
	probeNestingDepth = 64
	probeMemberSize   = 101 << 20
	// probeTimeout bounds one round of probes.
	probeTimeout = 2 * time.Minute
)

// fixLines are the clamd.conf lines under which clamd alerts on every
// limit it hits (see package daemon's SafeLimits); fixEncryptedLines those
// under which it alerts on what it cannot decrypt.
const (
	fixLines          = "AlertExceedsMax yes; MaxFileSize no lower than MaxScanSize (e.g. MaxScanSize 400M, MaxFileSize 400M)"
	fixEncryptedLines = "AlertEncryptedArchive yes; AlertEncryptedDoc yes"
)

// probe is one probe artifact and what an OK for it means.
type probe struct {
	name    string
	content []byte
	// finding says what a clamd that answered OK skipped.
	finding string
	// fix names the clamd.conf lines that make it alert instead.
	fix string
	// costly probes are skipped once a cheaper one found a silent skip.
	costly bool
	// build makes the content when it is not given.
	build func() ([]byte, error)
}

// probeSetRevision is kept with the findings on disk (probecache.go): a
// finding of an earlier set of probes says nothing of the probes added
// since, so a plugin upgrade probes a long-running clamd again. Raise it
// whenever the probes change.
const probeSetRevision = "2"

// buildProbes makes the probe artifacts.
func buildProbes() ([]probe, error) {
	nested := EICAR()
	for i := probeNestingDepth; i > 0; i-- {
		var err error
		if nested, err = zipMember(fmt.Sprintf("level%d.zip", i), zip.Deflate, func(w io.Writer) error {
			_, err := w.Write(nested)
			return err
		}); err != nil {
			return nil, fmt.Errorf("build the nested probe: %w", err)
		}
	}
	// An outer zip whose one member is a 101 MiB stored zip of the EICAR
	// file and zeros: clamd must take the member in whole (it is over
	// MaxFileSize) to find the EICAR file in it. The EICAR file comes
	// first, so a clamd that does look stops there, without unpacking the
	// zeros (2.6 s of its CPU otherwise, measured). Written as a stream:
	// the 101 MiB never sit in memory. Built when first sent (deflating
	// 101 MiB takes the plugin ~0.5 s), so the cheap probes go first.
	member := sync.OnceValues(func() ([]byte, error) {
		return zipMember("inner.zip", zip.Deflate, func(w io.Writer) error {
			inner := zip.NewWriter(w)
			e, err := inner.CreateHeader(&zip.FileHeader{Name: "eicar.com", Method: zip.Store})
			if err != nil {
				return err
			}
			if _, err := e.Write(EICAR()); err != nil {
				return err
			}
			pad, err := inner.CreateHeader(&zip.FileHeader{Name: "padding.bin", Method: zip.Store})
			if err != nil {
				return err
			}
			zeros := make([]byte, 1<<20)
			for n := probeMemberSize - len(EICAR()); n > 0; n -= len(zeros) {
				if _, err := pad.Write(zeros[:min(n, len(zeros))]); err != nil {
					return err
				}
			}
			return inner.Close()
		})
	})
	// A zip whose member is flagged encrypted: clamd cannot open it, and
	// says so only with AlertEncryptedArchive (with every limit alerting
	// but that line off, an encrypted zip holding the marker answered OK).
	encrypted, err := zipMember("eicar.com", zip.Store, func(w io.Writer) error {
		// 12 bytes stand for the encryption header; the rest for
		// ciphertext (the EICAR file scrambled, so that nothing matches
		// it in the raw zip).
		b := make([]byte, 12, 12+len(EICAR()))
		for _, c := range EICAR() {
			b = append(b, c^0x5a)
		}
		_, err := w.Write(b)
		return err
	}, zipEncrypted)
	if err != nil {
		return nil, fmt.Errorf("build the encrypted probe: %w", err)
	}
	return []probe{
		{
			name:    "nested archives",
			content: nested,
			finding: fmt.Sprintf("it answers OK for the EICAR test file %d archives deep: it stops at MaxRecursion without an alert", probeNestingDepth),
			fix:     fixLines,
		},
		{
			name:    "encrypted archive",
			content: encrypted,
			finding: "it answers OK for an encrypted zip: it skips what it cannot decrypt without an alert",
			fix:     fixEncryptedLines,
		},
		{
			name:    "large archive member",
			build:   member,
			finding: fmt.Sprintf("it answers OK for a zip whose %d MiB member holds the EICAR test file: it skips a member over MaxFileSize or MaxScanSize without an alert", probeMemberSize>>20),
			fix:     fixLines,
			costly:  true,
		},
	}, nil
}

// zipEncrypted is the general purpose flag bit of an encrypted zip member.
const zipEncrypted = 0x1

func zipMember(name string, method uint16, write func(io.Writer) error, flags ...uint16) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	fh := &zip.FileHeader{Name: name, Method: method}
	for _, f := range flags {
		fh.Flags |= f
	}
	w, err := zw.CreateHeader(fh)
	if err != nil {
		return nil, err
	}
	if err := write(w); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// trustState is what the probes found out about a clamd.
type trustState int

const (
	// trustPending: not probed yet, or the probes are running.
	trustPending trustState = iota
	// trustPassed: every probe was found (or alerted on); or the clamd is
	// the plugin's own.
	trustPassed
	// trustFailed: clamd answered OK for at least one probe: it skips
	// content silently.
	trustFailed
	// trustUnknown: the probes could not tell (clamd does not detect the
	// EICAR file, or a probe failed): treated as failed.
	trustUnknown
)

// trust is the outcome of a round of probes.
type trust struct {
	state trustState
	// findings say what clamd skipped, or why the probes could not tell.
	findings []string
	// fix names the clamd.conf lines that would make it safe.
	fix string
}

// summary is the trust in one line for health messages and logs.
func (t trust) summary() string {
	switch t.state {
	case trustPending:
		return "checking whether it skips content silently"
	case trustPassed:
		return "it alerts on the content it skips"
	}
	msg := strings.Join(t.findings, "; ")
	if t.fix != "" {
		msg += "; set in its clamd.conf: " + t.fix
	}
	return msg
}

// runProbes sends the probes to clamd through c.
func runProbes(ctx context.Context, c *clamd.Client, probes []probe) trust {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	r, err := c.Instream(ctx, bytes.NewReader(EICAR()))
	switch {
	case err != nil:
		return trust{state: trustUnknown, findings: []string{fmt.Sprintf("its limits could not be checked: the EICAR test file was not scanned: %v", err)}}
	case r.Status != clamd.StatusFound:
		return trust{state: trustUnknown, findings: []string{
			"its limits could not be checked: it does not detect the EICAR test file (" + r.Raw + "); give it the official database (freshclam)"}}
	}
	t := trust{state: trustPassed}
	var fixes []string
	for _, p := range probes {
		if p.costly && t.state != trustPassed {
			// A silent skip is settled; the costly probe (seconds of CPU
			// for a clamd that does look) would add nothing.
			continue
		}
		content := p.content
		if content == nil {
			var err error
			if content, err = p.build(); err != nil {
				t.state = max(t.state, trustUnknown)
				t.findings = append(t.findings, fmt.Sprintf("the %s probe could not be built: %v", p.name, err))
				continue
			}
		}
		r, err := c.Instream(ctx, bytes.NewReader(content))
		switch {
		case errors.Is(err, clamd.ErrSizeLimit):
			t.state = max(t.state, trustUnknown)
			t.findings = append(t.findings, fmt.Sprintf("the %s probe (%d bytes) is over its StreamMaxLength: %v", p.name, len(content), err))
		case err != nil:
			t.state = max(t.state, trustUnknown)
			t.findings = append(t.findings, fmt.Sprintf("the %s probe failed: %v", p.name, err))
		case r.Status == clamd.StatusOK:
			// Every cheap probe still runs, so the fix names every line
			// to set (Debian's clamd.conf lacks both kinds).
			t.state = trustFailed
			t.findings = append(t.findings, p.finding)
			if !slices.Contains(fixes, p.fix) {
				fixes = append(fixes, p.fix)
			}
		}
	}
	t.fix = strings.Join(fixes, "; ")
	return t
}
