//go:build windows && !qimg_portable

package file

import (
	"io"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"

	"qimg/image"
)

// Windows: FILE_FLAG_NO_BUFFERING for direct I/O, sparse files with
// FSCTL_SET_ZERO_DATA for holes (NTFS), SetEndOfFile on a file made
// non-sparse for preallocation, and the disk ioctls for \\.\PhysicalDriveN.
// There is no ranged kernel copy: copies read and write.

// needsAlignment: direct I/O here takes only aligned offsets, lengths
// and buffers. punchesHoles: discarded and unmapped ranges are holes.
const (
	needsAlignment = true
	punchesHoles   = true
)

const (
	directOpenFlag = windows.FILE_FLAG_NO_BUFFERING
	syncOpenFlag   = syscall.O_SYNC // FILE_FLAG_WRITE_THROUGH
)

// The disk ioctls of <winioctl.h>.
const (
	ioctlDiskGetDriveGeometry = 0x00070000
	ioctlDiskGetLengthInfo    = 0x0007405c
)

func (d *File) bypassCache() error { return nil }

// diskGeometry is DISK_GEOMETRY.
type diskGeometry struct {
	Cylinders         int64
	MediaType         uint32
	TracksPerCylinder uint32
	SectorsPerTrack   uint32
	BytesPerSector    uint32
}

func (d *File) sectorSize() int64 {
	var g diskGeometry
	if ioctl(d.fd, ioctlDiskGetDriveGeometry, nil, 0, unsafe.Pointer(&g), unsafe.Sizeof(g)) != nil {
		return 0
	}
	return int64(g.BytesPerSector)
}

// deviceSize asks a disk its length, as qemu's file-win32 does.
func (d *File) deviceSize() (int64, error) {
	var n int64
	if ioctl(d.fd, ioctlDiskGetLengthInfo, nil, 0, unsafe.Pointer(&n), unsafe.Sizeof(n)) == nil {
		return n, nil
	}
	return d.f.Seek(0, io.SeekEnd)
}

func ioctl(fd int, code uint32, in unsafe.Pointer, inLen uintptr, out unsafe.Pointer, outLen uintptr) error {
	var n uint32
	return windows.DeviceIoControl(windows.Handle(fd), code, (*byte)(in), uint32(inLen), (*byte)(out), uint32(outLen), &n, nil)
}

// setSparse marks a file sparse (or not): holes are left unallocated and
// FSCTL_SET_ZERO_DATA deallocates.
func setSparse(fd int, sparse bool) error {
	var flag byte // FILE_SET_SPARSE_BUFFER
	if sparse {
		flag = 1
	}
	return ioctl(fd, windows.FSCTL_SET_SPARSE, unsafe.Pointer(&flag), 1, nil, 0)
}

// prepareNew makes a file that create opens sparse, so that the holes of
// the image stay holes as on other platforms.
func (d *File) prepareNew() {
	if !d.blockDev && !d.charDev {
		_ = setSparse(d.fd, true)
	}
}

// zeroRange deallocates for unmap (FSCTL_SET_ZERO_DATA, which writes
// zeroes into a file that is not sparse); zeroes that stay allocated are
// written by the caller.
func (d *File) zeroRange(off, length int64, unmap bool) error {
	if !unmap || d.blockDev {
		return image.NotSupported("zeroing in place")
	}
	return zeroData(d.fd, off, length)
}

func (d *File) punchHole(off, length int64) {
	if !d.blockDev {
		_ = zeroData(d.fd, off, length)
	}
}

// zeroData is FSCTL_SET_ZERO_DATA with FILE_ZERO_DATA_INFORMATION.
func zeroData(fd int, off, length int64) error {
	in := struct{ Offset, BeyondFinalZero int64 }{off, off + length}
	return ioctl(fd, windows.FSCTL_SET_ZERO_DATA, unsafe.Pointer(&in), unsafe.Sizeof(in), nil, 0)
}

// allocate makes the file non-sparse and sets its size: NTFS allocates
// every cluster up to the end of a file that is not sparse.
func (d *File) allocate(off, length int64) error {
	if err := setSparse(d.fd, false); err != nil {
		return err
	}
	return d.f.Truncate(off + length)
}

// datasync is FlushFileBuffers.
func (d *File) datasync() error { return d.f.Sync() }

func (d *File) setNoCOW() {}

func (d *File) kernelCopy(*File, int64, int64, int64) (int64, error) {
	return 0, image.NotSupported("copy offload")
}
