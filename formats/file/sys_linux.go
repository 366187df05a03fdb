//go:build linux && !qimg_portable

package file

import (
	"errors"
	"io"
	"syscall"

	"golang.org/x/sys/unix"

	"qimg/image"
)

// Linux: O_DIRECT, fallocate for zeroes, holes and preallocation,
// copy_file_range, the block device ioctls and btrfs's NOCOW flag.

// needsAlignment: direct I/O here takes only aligned offsets, lengths
// and buffers. punchesHoles: discarded and unmapped ranges are holes.
const (
	needsAlignment = true
	punchesHoles   = true
)

const (
	directOpenFlag = syscall.O_DIRECT
	syncOpenFlag   = syscall.O_DSYNC
)

// bypassCache is done by O_DIRECT at open.
func (d *File) bypassCache() error { return nil }

// sectorSize is a block device's logical block size, 0 when unknown.
func (d *File) sectorSize() int64 {
	n, err := unix.IoctlGetInt(d.fd, unix.BLKSSZGET)
	if err != nil {
		return 0
	}
	return int64(n)
}

// deviceSize is where a device ends.
func (d *File) deviceSize() (int64, error) { return d.f.Seek(0, io.SeekEnd) }

// zeroRange makes a range read as zeroes in place, or punched (unmap);
// on an error the caller writes zeroes.
func (d *File) zeroRange(off, length int64, unmap bool) error {
	mode := uint32(unix.FALLOC_FL_ZERO_RANGE)
	if unmap {
		mode = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
	}
	if d.blockDev {
		// block devices take both modes only with KEEP_SIZE
		mode |= unix.FALLOC_FL_KEEP_SIZE
	}
	return unix.Fallocate(d.fd, mode, off, length)
}

// punchHole deallocates a range, best effort.
func (d *File) punchHole(off, length int64) {
	_ = unix.Fallocate(d.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// allocate reserves blocks for a range (preallocation=falloc).
func (d *File) allocate(off, length int64) error { return unix.Fallocate(d.fd, 0, off, length) }

// datasync makes written data durable.
func (d *File) datasync() error { return unix.Fdatasync(d.fd) }

// fsNoCOW is FS_NOCOW_FL, the inode flag chattr +C sets.
const fsNoCOW = 0x00800000

func (d *File) setNoCOW() {
	if flags, err := unix.IoctlGetUint32(d.fd, unix.FS_IOC_GETFLAGS); err == nil {
		_ = unix.IoctlSetPointerInt(d.fd, unix.FS_IOC_SETFLAGS, int(flags|fsNoCOW))
	}
}

// kernelCopy is one copy_file_range call; errors.ErrUnsupported says the
// kernel cannot copy between these two files.
func (d *File) kernelCopy(t *File, srcOff, dstOff, length int64) (int64, error) {
	n, err := unix.CopyFileRange(d.fd, &srcOff, t.fd, &dstOff, int(length), 0)
	return int64(n), copyError(err)
}

// copyError sorts copy_file_range's errors: those that say "not between
// these files" become image's not-supported error, the caller then reads
// and writes.
func copyError(err error) error {
	switch {
	case err == nil, errors.Is(err, unix.EINTR):
		return err
	case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP),
		errors.Is(err, unix.EINVAL), errors.Is(err, unix.EBADF):
		return image.NotSupported("copy offload: %v", err)
	}
	return err
}

// prepareNew has nothing to do for a file create opens: new files are
// sparse here.
func (d *File) prepareNew() {}
