package daemon

import (
	"errors"
	"os/exec"
	"runtime"
	"syscall"
)

// sysProcAttr makes the kernel kill clamd when the plugin dies, however it
// dies (the host's SIGKILL included), so no clamd outlives its plugin.
// clamd stays in the plugin's process group: a signal to the group reaches
// both.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// startAndWait starts cmd and calls exited with cmd.Wait's result once the
// process ends. Linux ties the parent-death signal to the thread that
// forked, not to the process: if that thread ended, clamd would be killed
// with it. So the fork happens on a goroutine locked to its thread for as
// long as clamd lives.
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

// processAlive reports whether a process with this id exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
