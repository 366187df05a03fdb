//go:build darwin && !qimg_portable

package file

import (
	"io"

	"golang.org/x/sys/unix"

	"qimg/image"
)

// macOS: F_NOCACHE for direct I/O, F_PUNCHHOLE for holes (APFS),
// F_PREALLOCATE, and the disk ioctls qemu sizes /dev/diskN with. There is
// no ranged kernel copy: copies read and write.

// needsAlignment: direct I/O here takes only aligned offsets, lengths
// and buffers. punchesHoles: discarded and unmapped ranges are holes.
const (
	needsAlignment = false
	punchesHoles   = true
)

const (
	directOpenFlag = 0
	syncOpenFlag   = unix.O_DSYNC
)

// The disk ioctls of <sys/disk.h>: _IOR('d', 24, uint32_t) and
// _IOR('d', 25, uint64_t).
const (
	dkiocGetBlockSize  = 0x40046418
	dkiocGetBlockCount = 0x40086419
)

// bypassCache turns the page cache off for the file, macOS's O_DIRECT.
func (d *File) bypassCache() error {
	_, err := unix.FcntlInt(uintptr(d.fd), unix.F_NOCACHE, 1)
	return err
}

func (d *File) sectorSize() int64 {
	n, err := unix.IoctlGetInt(d.fd, dkiocGetBlockSize)
	if err != nil {
		return 0
	}
	return int64(uint32(n))
}

// deviceSize is the disk's block count times its block size, as qemu's
// raw_getlength asks a macOS disk; seeking to the end answers 0 there.
func (d *File) deviceSize() (int64, error) {
	count, err := unix.IoctlGetInt(d.fd, dkiocGetBlockCount)
	if bs := d.sectorSize(); err == nil && bs > 0 {
		return int64(count) * bs, nil
	}
	return d.f.Seek(0, io.SeekEnd)
}

// zeroRange punches a hole for unmap; zeroes that stay allocated are
// written by the caller.
func (d *File) zeroRange(off, length int64, unmap bool) error {
	if !unmap || d.blockDev {
		return image.NotSupported("zeroing in place")
	}
	return punch(d.fd, off, length)
}

func (d *File) punchHole(off, length int64) {
	if !d.blockDev {
		_ = punch(d.fd, off, length)
	}
}

// punch is fcntl(F_PUNCHHOLE). Its struct fpunchhole (flags, reserved,
// offset, length) is the start of struct fstore, so FcntlFstore carries it.
func punch(fd int, off, length int64) error {
	arg := unix.Fstore_t{Offset: off, Length: length}
	return unix.FcntlFstore(uintptr(fd), unix.F_PUNCHHOLE, &arg)
}

// allocate reserves blocks past the end of the file with F_PREALLOCATE
// (contiguous if it can) and then sets the size, as fallocate does.
func (d *File) allocate(off, length int64) error {
	st := unix.Fstore_t{Flags: unix.F_ALLOCATECONTIG | unix.F_ALLOCATEALL, Posmode: unix.F_PEOFPOSMODE, Length: length}
	if err := unix.FcntlFstore(uintptr(d.fd), unix.F_PREALLOCATE, &st); err != nil {
		st.Flags = unix.F_ALLOCATEALL
		if err := unix.FcntlFstore(uintptr(d.fd), unix.F_PREALLOCATE, &st); err != nil {
			return err
		}
	}
	return d.f.Truncate(off + length)
}

// datasync is F_FULLFSYNC (Go's Sync on macOS): fsync alone leaves the
// data in the drive's cache.
func (d *File) datasync() error { return d.f.Sync() }

func (d *File) setNoCOW() {}

func (d *File) kernelCopy(*File, int64, int64, int64) (int64, error) {
	return 0, image.NotSupported("copy offload")
}

// prepareNew has nothing to do for a file create opens: new files are
// sparse here.
func (d *File) prepareNew() {}
