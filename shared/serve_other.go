//go:build !linux

package shared

import (
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
)

// watchParent polls the parent pid: without Linux's parent-death signal it
// is the only way to notice the host is gone.
func watchParent(logger hclog.Logger, every time.Duration) {
	if !launchedByHost() {
		return
	}
	parent := os.Getppid()
	go func() {
		for range time.Tick(every) {
			if os.Getppid() != parent {
				logger.Error("host is gone; exiting", "parent", parent)
				os.Exit(3)
			}
		}
	}()
}
