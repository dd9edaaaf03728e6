package shared

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// heldBy lists this process's descriptors open on files under dir.
func heldBy(dir string) []string {
	var held []string
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
			held = append(held, e.Name()+" → "+target)
		}
	}
	return held
}

// A slot reads the artifact it was given, and once released holds no
// file of the artifact's: the next artifact reuses it.
func TestFileSlotsHoldEachArtifactUntilReleased(t *testing.T) {
	dir := t.TempDir()
	s := newFileSlots()
	defer s.close()
	var slotFd uintptr
	for i, content := range []string{"first artifact", "second, longer artifact"} {
		path := filepath.Join(dir, "a"+string(rune('0'+i)))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f := s.take(fd)
		if i == 0 {
			slotFd = f.Fd()
		} else if f.Fd() != slotFd {
			t.Errorf("the second artifact got descriptor %d, not the released slot's %d", f.Fd(), slotFd)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && uintptr(fd) != f.Fd() {
			t.Errorf("the received descriptor %d is still open", fd)
		}
		buf := make([]byte, 64)
		n, _ := f.ReadAt(buf, 0)
		if string(buf[:n]) != content {
			t.Errorf("artifact %d reads %q, want %q", i, buf[:n], content)
		}
		if held := heldBy(dir); len(held) != 1 {
			t.Errorf("artifact %d under way: held %v, want its one descriptor", i, held)
		}
		s.release(f)
		if held := heldBy(dir); len(held) != 0 {
			t.Errorf("artifact %d released: still held %v", i, held)
		}
	}
}
