//go:build freebsd && !qimg_portable

package file

import (
	"io"
	"unsafe"

	"golang.org/x/sys/unix"

	"qimg/image"
)

// FreeBSD: O_DIRECT, fspacectl for holes (FreeBSD 14), posix_fallocate,
// copy_file_range (FreeBSD 13), and the disk ioctls for devices, which are
// character devices there. Calls an older kernel lacks (ENOSYS) fall back
// to writing zeroes and to reads and writes.

// needsAlignment: direct I/O here takes only aligned offsets, lengths
// and buffers. punchesHoles: discarded and unmapped ranges are holes.
const (
	needsAlignment = true
	punchesHoles   = true
)

const (
	directOpenFlag = unix.O_DIRECT
	syncOpenFlag   = unix.O_SYNC
)

// System calls newer than x/sys's tables, and the disk ioctls of
// <sys/disk.h>: _IOR('d', 128, u_int) and _IOR('d', 129, off_t).
const (
	sysPosixFallocate = 530
	sysCopyFileRange  = 569
	sysFspacectl      = 580
	spacectlDealloc   = 1

	diocGSectorSize = 0x40046480
	diocGMediaSize  = 0x40086481
)

func (d *File) bypassCache() error { return nil }

func (d *File) sectorSize() int64 {
	n, err := unix.IoctlGetInt(d.fd, diocGSectorSize)
	if err != nil {
		return 0
	}
	return int64(uint32(n))
}

// deviceSize asks a disk its media size, as qemu's raw_getlength does on
// FreeBSD.
func (d *File) deviceSize() (int64, error) {
	if n, err := unix.IoctlGetInt(d.fd, diocGMediaSize); err == nil {
		return int64(n), nil
	}
	return d.f.Seek(0, io.SeekEnd)
}

// zeroRange deallocates for unmap (fspacectl); zeroes that stay allocated
// are written by the caller.
func (d *File) zeroRange(off, length int64, unmap bool) error {
	if !unmap || d.blockDev {
		return image.NotSupported("zeroing in place")
	}
	return dealloc(d.fd, off, length)
}

func (d *File) punchHole(off, length int64) {
	if !d.blockDev {
		_ = dealloc(d.fd, off, length)
	}
}

// spacectlRange is struct spacectl_range.
type spacectlRange struct{ Offset, Length int64 }

// dealloc is fspacectl(SPACECTL_DEALLOC) over the whole range: the kernel
// reports what it did not do in the second range, which is looped on.
func dealloc(fd int, off, length int64) error {
	r := spacectlRange{off, length}
	for r.Length > 0 {
		var left spacectlRange
		_, _, e := unix.Syscall6(sysFspacectl, uintptr(fd), spacectlDealloc,
			uintptr(unsafe.Pointer(&r)), 0, uintptr(unsafe.Pointer(&left)), 0)
		if e != 0 {
			return e
		}
		if left.Length >= r.Length {
			return unix.EIO
		}
		r = left
	}
	return nil
}

// allocate is posix_fallocate, which answers with its error number.
func (d *File) allocate(off, length int64) error {
	r, _, e := unix.Syscall(sysPosixFallocate, uintptr(d.fd), uintptr(off), uintptr(length))
	if e != 0 {
		return e
	}
	if r != 0 {
		return unix.Errno(r)
	}
	return nil
}

func (d *File) datasync() error { return d.f.Sync() }

func (d *File) setNoCOW() {}

// kernelCopy is one copy_file_range call.
func (d *File) kernelCopy(t *File, srcOff, dstOff, length int64) (int64, error) {
	n, _, e := unix.Syscall6(sysCopyFileRange, uintptr(d.fd), uintptr(unsafe.Pointer(&srcOff)),
		uintptr(t.fd), uintptr(unsafe.Pointer(&dstOff)), uintptr(length), 0)
	switch e {
	case 0:
		return int64(n), nil
	case unix.EINTR:
		return 0, e
	case unix.EXDEV, unix.ENOSYS, unix.EOPNOTSUPP, unix.EINVAL, unix.EBADF:
		return 0, image.NotSupported("copy offload: %v", e)
	}
	return 0, e
}

// prepareNew has nothing to do for a file create opens: new files are
// sparse here.
func (d *File) prepareNew() {}
