//go:build !linux

package launch

// RememberedFileSHA256 is FileSHA256: the digest is remembered on Linux
// only (see digest_linux.go).
func RememberedFileSHA256(path, dir string) (string, error) {
	return FileSHA256(path)
}
