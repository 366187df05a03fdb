package qcow2

import (
	"qimg/image"
)

// openForCheck opens an image for qemu-img check (qemu's BDRV_O_CHECK):
// as Open does, except that what the check reports and repairs is neither
// refused nor repaired here: a dirty image (lazy refcounts) keeps its
// stale refcounts for the check to report, an image marked corrupt may be
// opened read/write to be repaired, and persistent bitmaps, which the
// write path does not maintain yet, do not stop a repair (the check
// writes only refcounts, L1/L2 flags and header bits).
func openForCheck(o *image.OpenContext, h *header) (image.Driver, error) {
	q := &Image{filename: o.Filename, file: o.File}
	if err := q.openEncryption(o, h); err != nil { // encrypt.go
		return nil, err
	}
	if err := q.init(h); err != nil {
		return nil, err
	}
	if err := q.loadBitmaps(); err != nil {
		return nil, err
	}
	if !o.Writable {
		return q, nil
	}
	q.writable = true
	q.rc = newRefcounts(q)
	if err := q.rc.load(); err != nil {
		return nil, image.IOError("Could not initialize refcount handling", err)
	}
	return q, nil
}
