//go:build windows && !qimg_portable && !qimg_noholes

package file

import (
	"errors"
	"math"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Windows (NTFS, ReFS) lists a file's allocated ranges with
// FSCTL_QUERY_ALLOCATED_RANGES; a file that is not sparse is one range.

// allocatedRange is FILE_ALLOCATED_RANGE_BUFFER.
type allocatedRange struct{ Offset, Length int64 }

// findsHoles: BlockStatus tells holes from data.
const findsHoles = true

// findData returns where the first data at or after off starts and where
// the data starting at off ends; ok is false when the file system cannot
// tell.
func (d *File) findData(off int64) (data, hole int64, ok bool) {
	size := d.fileSize()
	if off >= size {
		return math.MaxInt64, off, true
	}
	in := allocatedRange{Offset: off, Length: size - off}
	var out [1]allocatedRange
	var n uint32
	err := windows.DeviceIoControl(windows.Handle(d.fd), windows.FSCTL_QUERY_ALLOCATED_RANGES,
		(*byte)(unsafe.Pointer(&in)), uint32(unsafe.Sizeof(in)),
		(*byte)(unsafe.Pointer(&out[0])), uint32(unsafe.Sizeof(out)), &n, nil)
	if err != nil && !errors.Is(err, windows.ERROR_MORE_DATA) {
		return 0, 0, false
	}
	if n < uint32(unsafe.Sizeof(out[0])) {
		return math.MaxInt64, off, true // no range after off: a hole up to the end
	}
	r := out[0]
	if r.Offset > off {
		return r.Offset, off, true
	}
	return off, r.Offset + r.Length, true
}
