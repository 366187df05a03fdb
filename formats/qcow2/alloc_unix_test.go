//go:build unix

package qcow2

import (
	"os"
	"syscall"
)

// allocatedBytes is the space a file occupies on disk (st_blocks).
func allocatedBytes(st os.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Blocks * 512
	}
	return st.Size()
}
