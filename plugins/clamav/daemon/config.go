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

// configLines is the whole clamd.conf of a managed clamd.
func configLines(opts Options, socket, tmpDir string) [][2]string {
	lines := [][2]string{
		// A child process, not a daemon: it stays ours to supervise, and
		// its log lines come to us on stderr.
		{"Foreground", "yes"},
		{"LocalSocket", socket},
		{"LocalSocketMode", "600"},
		{"FixStaleSocket", "yes"},
		{"DatabaseDirectory", opts.Database},
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
