package file

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"qimg/image"
)

// maxCopyRange bounds one copy_file_range call.
const maxCopyRange = 1 << 30

// CopyRange copies length bytes at srcOff of this file to dstOff of dst,
// another file, inside the kernel (copy_file_range: a reflink on file
// systems that share extents, a page-cache copy elsewhere). When the
// kernel cannot copy between the two (another file system, a kernel
// without the call), it returns ErrUnsupported and the caller reads and
// writes instead.
func (d *File) CopyRange(dst image.Driver, srcOff, dstOff, length int64) error {
	t, ok := dst.(*File)
	if !ok || !t.writable || d.cache.Direct != t.cache.Direct {
		return image.NotSupported("copy offload")
	}
	end := dstOff + length
	for length > 0 {
		so, do := srcOff, dstOff
		n, err := unix.CopyFileRange(d.fd, &so, t.fd, &do, int(min(length, maxCopyRange)), 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) ||
				errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBADF) {
				return image.NotSupported("copy offload: %v", err)
			}
			return fmt.Errorf("%s: copy_file_range: %w", t.path, err)
		}
		if n == 0 {
			return fmt.Errorf("%s: short copy at %d: %w", d.path, srcOff, io.ErrUnexpectedEOF)
		}
		srcOff += int64(n)
		dstOff += int64(n)
		length -= int64(n)
	}
	if !t.blockDev && end > t.Size() {
		t.mu.Lock()
		if end > t.size {
			t.size = end
		}
		t.mu.Unlock()
	}
	return nil
}
