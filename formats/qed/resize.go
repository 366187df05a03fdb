package qed

import (
	"syscall"

	"qimg/image"
)

// Truncate grows the image as qemu's bdrv_qed_co_truncate: only the size
// in the header changes (the L1 table already has room for every size
// the header allows); shrinking and preallocation are refused.
func (q *Image) Truncate(size int64, prealloc image.Prealloc) error {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	if prealloc != image.PreallocOff {
		return image.Errorf(syscall.ENOTSUP, "Unsupported preallocation mode '%s'", prealloc)
	}
	if size < 0 || !imageSizeValid(uint64(size), uint64(q.h.clusterSize), uint64(q.h.tableSize)) {
		return image.Errorf(syscall.EINVAL, "Invalid image size specified")
	}
	if uint64(size) < q.h.imageSize {
		return image.Errorf(syscall.ENOTSUP, "Shrinking images is currently not supported")
	}
	old := q.h.imageSize
	q.h.imageSize = uint64(size)
	if err := q.writeHeader(); err != nil {
		q.h.imageSize = old
		return image.Errorf(err, "Failed to update the image size: %v", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.readL1()
}
