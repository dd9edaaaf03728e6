package scanner

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// trimEvery is how often a mapped artifact's pages are dropped from the
// plugin's page tables while libyara scans it. At libyara's ~700 MiB/s
// that bounds the mapped part of the resident set to a few MiB plus
// read-ahead, as long as the trimmer gets a thread in time. Measured on
// 512 MiB: peak RSS 61 MiB at 25 ms, 40-49 MiB at 10 ms with one run at
// 72 MiB on the loaded machine (the trimmer late); 5 ms leaves more room.
// No loss of throughput on 200 MiB either way.
const trimEvery = 5 * time.Millisecond

// mapping is an artifact file mapped read-only for a scan.
//
// libyara's own ScanFileDescriptor maps the file too, but keeps every page
// it touched mapped until the scan ends: the plugin's resident set grew by
// the artifact's size (548 MiB peak for 512 MiB, 19 MiB of it anonymous),
// page cache that is shared and reclaimable, yet what an operator's RSS
// limit counts. Mapping it ourselves lets a trimmer drop the pages
// (MADV_DONTNEED) while the scan runs: on a shared file mapping that only
// unmaps them, and a page libyara reads again faults back in from the
// page cache with the same bytes, so the scan sees the whole file.
type mapping struct {
	data []byte
	stop chan struct{}
	done sync.WaitGroup
}

// mapFile maps size bytes of f (size > 0) and starts the trimmer.
func mapFile(f *os.File, size int64) (*mapping, error) {
	if int64(int(size)) != size {
		return nil, fmt.Errorf("map the artifact: %d bytes do not fit this platform's address space", size)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map the artifact: %w", err)
	}
	// Read-ahead suits libyara's front-to-back pass.
	_ = unix.Madvise(data, unix.MADV_SEQUENTIAL)
	m := &mapping{data: data, stop: make(chan struct{})}
	m.done.Add(1)
	go m.trim()
	return m, nil
}

func (m *mapping) trim() {
	defer m.done.Done()
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			_ = unix.Madvise(m.data, unix.MADV_DONTNEED)
		}
	}
}

// unmap stops the trimmer and unmaps; call it once the scan is over.
func (m *mapping) unmap() {
	close(m.stop)
	m.done.Wait()
	_ = unix.Munmap(m.data)
}
