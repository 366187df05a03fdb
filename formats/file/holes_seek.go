//go:build (linux || darwin || freebsd) && !qimg_noholes

package file

import (
	"errors"
	"math"
	"syscall"

	"golang.org/x/sys/unix"
)

// Linux, macOS (APFS) and FreeBSD find holes with SEEK_DATA/SEEK_HOLE.

// findsHoles: BlockStatus tells holes from data.
const findsHoles = true

// findData returns where the first data at or after off starts and where
// the data starting at off ends (off itself when off is in a hole); ok is
// false when the file system cannot tell.
func (d *File) findData(off int64) (data, hole int64, ok bool) {
	data, err := unix.Seek(d.fd, off, unix.SEEK_DATA)
	if err != nil {
		if errors.Is(err, syscall.ENXIO) {
			return math.MaxInt64, off, true // no data after off: a hole up to the end
		}
		return 0, 0, false
	}
	if data > off {
		return data, off, true
	}
	hole, err = unix.Seek(d.fd, off, unix.SEEK_HOLE)
	if err != nil {
		return off, off, true
	}
	return off, hole, true
}
