package file

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"qimg/image"
)

// maxCopyRange bounds one kernel copy call.
const maxCopyRange = 1 << 30

// CopyRange copies length bytes at srcOff of this file to dstOff of dst,
// another file, inside the kernel where the platform can (Linux's and
// FreeBSD's copy_file_range: a reflink on file systems that share extents,
// a page-cache copy elsewhere). When it cannot copy between the two
// (another file system, a kernel without the call, a platform without
// one), it returns ErrUnsupported and the caller reads and writes instead.
func (d *File) CopyRange(dst image.Driver, srcOff, dstOff, length int64) error {
	t, ok := dst.(*File)
	if !ok || !t.writable || d.cache.Direct != t.cache.Direct {
		return image.NotSupported("copy offload")
	}
	end := dstOff + length
	for length > 0 {
		n, err := d.kernelCopy(t, srcOff, dstOff, min(length, maxCopyRange))
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if errors.Is(err, image.ErrUnsupported) {
				return err
			}
			return fmt.Errorf("%s: copy_file_range: %w", t.path, err)
		}
		if n == 0 {
			return fmt.Errorf("%s: short copy at %d: %w", d.path, srcOff, io.ErrUnexpectedEOF)
		}
		srcOff += n
		dstOff += n
		length -= n
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
