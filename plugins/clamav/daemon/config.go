package daemon

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// SafeLimits returns the clamd.conf lines under which clamd never answers OK
// for content it did not examine. Measured on clamd 1.4.6:
//
//   - AlertExceedsMax turns a hit limit (MaxScanSize, MaxRecursion,
//     MaxFiles, MaxScanTime...) into Heuristics.Limits.Exceeded.* FOUND,
//     which the scanner answers unknown. Without it clamd says OK.
//   - Except an archive member over MaxFileSize, which clamd skips without
//     an alert whatever AlertExceedsMax says: a zip holding 101 MiB of
//     zeros and a signature (103 KB on the wire) answers OK under the
//     default MaxFileSize of 100M. With MaxFileSize no lower than
//     MaxScanSize such a member passes MaxScanSize first, and that alerts
//     (the same zip: Heuristics.Limits.Exceeded.MaxScanSize).
//   - PCREMaxFileSize (default 100M) silently skips PCRE signatures on
//     larger files: kept at MaxFileSize.
//   - The AlertEncrypted* lines report an encrypted archive or document
//     (Heuristics.Encrypted.*) instead of an OK for content never opened.
//
// 400M is clamd's default MaxScanSize.
func SafeLimits() [][2]string {
	return [][2]string{
		{"AlertExceedsMax", "yes"},
		{"MaxScanSize", "400M"},
		{"MaxFileSize", "400M"},
		{"PCREMaxFileSize", "400M"},
		{"AlertEncrypted", "yes"},
		{"AlertEncryptedArchive", "yes"},
		{"AlertEncryptedDoc", "yes"},
	}
}

// EvasionPrefix names the signatures the managed clamd loads beside the
// operator's database (evasionSignatures): no malware, but content clamd
// skips without an alert. A match is unknown, not malicious.
const EvasionPrefix = "MicroEngine.Evasion."

// evasionFile holds evasionSignatures in the folder clamd loads.
const evasionFile = "microengine-evasion.ndb"

// evasionSignatures finds content clamd skips with an OK, wherever it
// unpacks it (a plugin reading the artifact sees only its outer layer).
// clamd 1.4.6 sizes a zip member by its local header: one with the zip64
// mark (compressed size 0xFFFFFFFF, 18 bytes in: what Python's zipfile
// writes with force_zip64) is skipped, the marker in it answered OK.
func evasionSignatures() []byte {
	return []byte(EvasionPrefix + "Zip64LocalHeader:0:*:504b0304{14}ffffffff\n")
}

// linkDatabase makes dst the folder clamd loads: a link to each database
// file of src (the operator's folder, left untouched), and the evasion
// signatures. It is run before each start and each RELOAD.
func linkDatabase(src, dst string) error {
	old, err := os.ReadDir(dst)
	if err != nil {
		return fmt.Errorf("signature links: %w", err)
	}
	for _, e := range old {
		if err := os.Remove(filepath.Join(dst, e.Name())); err != nil {
			return fmt.Errorf("signature links: %w", err)
		}
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("signature database folder: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() || !isDatabaseFile(e.Name()) || e.Name() == evasionFile {
			continue
		}
		if err := os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return fmt.Errorf("signature links: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dst, evasionFile), evasionSignatures(), 0o600); err != nil {
		return fmt.Errorf("signature links: %w", err)
	}
	return nil
}

// configLines is the whole clamd.conf of a managed clamd; dbDir is the
// folder linkDatabase fills.
func configLines(opts Options, socket, tmpDir, dbDir string) [][2]string {
	lines := [][2]string{
		// A child process, not a daemon: it stays ours to supervise, and
		// its log lines come to us on stderr.
		{"Foreground", "yes"},
		{"LocalSocket", socket},
		{"LocalSocketMode", "600"},
		{"FixStaleSocket", "yes"},
		{"DatabaseDirectory", dbDir},
		{"TemporaryDirectory", tmpDir},
		{"StreamMaxLength", strconv.FormatInt(opts.StreamMaxLength, 10)},
		{"MaxThreads", strconv.Itoa(opts.MaxThreads)},
		// We watch the database folder and send RELOAD ourselves, so we
		// know when a reload is under way.
		{"SelfCheck", "0"},
		// Scans go on over the old database while a new one loads.
		{"ConcurrentDatabaseReload", "yes"},
		// No "User" line: clamd runs as the plugin's user, and the socket
		// folder is the plugin's own.
	}
	return append(lines, SafeLimits()...)
}

func renderConfig(lines [][2]string) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by the microengine clamav plugin for the clamd it manages.\n")
	for _, l := range lines {
		fmt.Fprintf(&b, "%s %s\n", l[0], l[1])
	}
	return b.Bytes()
}

// isDatabaseFile reports whether clamd loads a file of this name from its
// DatabaseDirectory.
func isDatabaseFile(name string) bool {
	switch filepath.Ext(name) {
	case ".hdb", ".hsb", ".mdb", ".msb", ".ndb", ".ldb", ".cdb", ".fp", ".sfp",
		".ign", ".ign2", ".idb", ".cvd", ".cld", ".cud", ".yar", ".yara", ".pdb",
		".wdb", ".ftm", ".cfg", ".crb", ".cat", ".info":
		return true
	}
	return false
}

// CheckDatabase reports why clamd could not start on dir: it is missing,
// not a folder, or holds no database file (clamd exits on an empty one).
func CheckDatabase(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("signature database folder: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() && isDatabaseFile(e.Name()) {
			return nil
		}
	}
	return fmt.Errorf("signature database folder %s holds no clamd database file (.cvd, .cld, .hdb, .ndb...); clamd cannot start on it", dir)
}

// fingerprint sums up the database files of dir (names, sizes, times), so
// a change — freshclam dropping a new daily — is seen without reading them.
func fingerprint(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	for _, e := range entries {
		if e.IsDir() || !isDatabaseFile(e.Name()) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile: the next look sees it gone
		}
		fmt.Fprintf(&b, "%s %d %d\n", e.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}
