package launch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// settledAfter is how long a file must have been left alone (its ctime
// this far in the past) before its digest is remembered. The kernel
// stamps times from a clock that moves in ticks of a few milliseconds, so
// two writes within one tick may leave the same ctime: a digest recorded
// then could outlive the bytes it was taken of. A binary rebuilt a moment
// ago is hashed again until it has settled.
const settledAfter = 2 * time.Second

// RememberedFileSHA256 is FileSHA256 of path, remembered in dir (a host's
// own folder, such as data_dir/plugin-digests): a file whose device,
// inode, size, mtime and ctime are those it had when it was hashed is not
// read again. Every write to a file, and every rename or chmod, sets its
// ctime to the current time, which no one but root can set back. Hashing
// a 20 MB plugin took ~10 ms of CPU at every start of the host (each
// `microengine scan`, beside the plugin's own start on two cores); a
// remembered digest costs a stat and a small read. Anyone who may write
// dir may also write the verdict cache beside it, so it trusts no one
// new. With dir "", or when dir cannot be read or written, the file is
// hashed.
func RememberedFileSHA256(path, dir string) (string, error) {
	return rememberedFileSHA256(path, dir, settledAfter)
}

// rememberedFileSHA256 is RememberedFileSHA256 remembering files whose
// ctime is more than settled in the past.
func rememberedFileSHA256(path, dir string, settled time.Duration) (string, error) {
	if dir == "" {
		return FileSHA256(path)
	}
	record := filepath.Join(dir, digestRecordName(path))
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err == nil {
		if b, err := os.ReadFile(record); err == nil {
			if sum, ok := strings.CutPrefix(strings.TrimSpace(string(b)), statLine(&st)+" "); ok && isHexSHA256(sum) {
				return sum, nil
			}
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	var before, after syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &before); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	h := sha256.New()
	if _, err := f.WriteTo(h); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	// Remembered only when nothing changed while it was read, and the file
	// had settled before; a failure to write costs the next start a hash.
	if syscall.Fstat(int(f.Fd()), &after) == nil && statLine(&before) == statLine(&after) &&
		time.Since(time.Unix(after.Ctim.Unix())) > settled {
		_ = writeRecord(dir, record, statLine(&after)+" "+sum+"\n")
	}
	return sum, nil
}

// digestRecordName names path's record: a digest of the path, so any
// path makes a plain file name.
func digestRecordName(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	sum := sha256.Sum256([]byte(path))
	return hex.EncodeToString(sum[:16])
}

// statLine is what identifies a file's content for as long as it holds:
// device, inode, size, mtime and ctime (nanoseconds).
func statLine(st *syscall.Stat_t) string {
	return fmt.Sprintf("%d %d %d %d.%09d %d.%09d", st.Dev, st.Ino, st.Size,
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
}

func isHexSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size && strings.ToLower(s) == s
}

// writeRecord writes a record whole or not at all (a temporary file
// renamed over it), in a folder only its owner may write.
func writeRecord(dir, record, line string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".record-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	_, err = tmp.WriteString(line)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), record)
}
