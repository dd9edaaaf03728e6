package devclamd

import (
	"os/exec"
	"runtime"
	"syscall"
)

// sysProcAttr makes the kernel kill clamd if its parent (a test binary, or
// the devclamd command) dies without stopping it, so no stray daemon
// outlives a crashed test run. clamd gets its own process group so that a
// terminal's Ctrl-C reaches only its parent, which then stops it in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// startAndWait starts cmd and calls exited with cmd.Wait's result once the
// process ends. Linux ties the parent-death signal to the thread that
// forked, not to the process: if that thread ended, clamd would be killed
// with it. So the fork happens on a goroutine locked to its thread for as
// long as clamd lives (the thread ends with it, never before).
func startAndWait(cmd *exec.Cmd, exited func(error)) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, on purpose: see above
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited(cmd.Wait())
	}()
	return <-started
}
