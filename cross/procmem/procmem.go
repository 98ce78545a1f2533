// Package procmem reads a process's resident memory from /proc, for the
// memory benchmarks (cross/cmd/rssbench, node/bridge/cmd/bridgebench).
package procmem

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Read returns VmRSS and VmHWM of pid, in KiB.
func Read(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var v int64
		switch {
		case strings.HasPrefix(sc.Text(), "VmRSS:"):
			fmt.Sscanf(strings.TrimPrefix(sc.Text(), "VmRSS:"), "%d", &v)
			rss = v
		case strings.HasPrefix(sc.Text(), "VmHWM:"):
			fmt.Sscanf(strings.TrimPrefix(sc.Text(), "VmHWM:"), "%d", &v)
			hwm = v
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("read /proc/%d/status: %w", pid, err)
	}
	return rss, hwm, nil
}
