package vdi

import (
	"fmt"
	"io"

	"qimg/image"
)

// Check is qemu's vdi_co_check: every allocated entry must point inside
// the image and at a block no other entry uses, and the count of them
// must match the header. qemu cannot repair VDI images.
func (v *Image) Check(fix image.CheckFix, log io.Writer) (*image.CheckResult, error) {
	if fix != 0 {
		return nil, image.ErrNoCheck
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	r := &image.CheckResult{}
	n := v.h.blocksInImage
	owner := make([]uint32, n) // which block uses each data block
	for i := range owner {
		owner[i] = unallocated
	}
	var count uint32
	for block, entry := range v.bmap {
		if !allocated(entry) {
			continue
		}
		if entry >= n {
			fmt.Fprintf(log, "ERROR: block index %d too large, is %d\n", block, entry)
			r.Corruptions++
			continue
		}
		count++
		if !allocated(owner[entry]) {
			owner[entry] = entry
		} else {
			// qemu prints the entry twice here
			fmt.Fprintf(log, "ERROR: block index %d also used by %d\n", owner[entry], entry)
			r.Corruptions++
		}
	}
	if count != v.h.blocksAllocated {
		fmt.Fprintf(log, "ERROR: allocated blocks mismatch, is %d, should be %d\n", count, v.h.blocksAllocated)
		r.Corruptions++
	}
	return r, nil
}
