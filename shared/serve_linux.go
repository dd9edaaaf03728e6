package shared

import (
	"os"
	"runtime"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// watchParent keeps a plugin from outliving its host, which go-plugin does
// not do: a parent-death signal from the kernel, and, because that signal
// is tied to the thread that forked us and can be missed if the parent died
// before we set it, a poll of our parent pid as well.
func watchParent(logger hclog.Logger, every time.Duration) {
	if !launchedByHost() {
		return
	}
	parent := os.Getppid()
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		logger.Warn("cannot set parent-death signal; relying on the parent poll", "error", err)
	}
	runtime.UnlockOSThread()
	if os.Getppid() != parent {
		logger.Error("host is already gone; exiting")
		os.Exit(3)
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for range t.C {
			if os.Getppid() != parent {
				logger.Error("host is gone; exiting", "parent", parent)
				os.Exit(3)
			}
		}
	}()
}
