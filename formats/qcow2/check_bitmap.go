package qcow2

import (
	"fmt"

	"qimg/image"
)

// Persistent bitmaps in a check: qemu loads them when it opens the image,
// so a broken directory, or a bad table of a bitmap that is not in use,
// makes qemu-img check fail to open the image; the check then counts the
// directory, the tables and the data clusters (qemu's
// qcow2_check_bitmaps_refcounts).

// Bitmap directory entry limits (qemu's qcow2-bitmap.c).
const (
	bmeMaxTableSize       = 0x8000000
	bmeMaxPhysSize        = 0x20000000
	bmeMaxGranularityBits = 31
	bmeMinGranularityBits = 9
	bmeReservedFlags      = ^uint32(bmeFlagInUse | bmeFlagAuto)
	bmeTypeDirtyTracking  = 1
	// bitmap table entries
	bmeTableReservedMask = 0xff000000000001fe
	bmeTableOffsetMask   = 0x00fffffffffffe00
	bmeTableAllOnes      = 1
)

// openError is a failure qemu meets while opening the image: qemu-img
// words it "Could not open 'FILE': …".
type openError struct{ msg string }

func (e *openError) Error() string      { return e.msg }
func (e *openError) Unwrap() error      { return image.ErrCorrupt }
func (e *openError) CouldNotOpen() bool { return true }

func openErrorf(format string, args ...any) error {
	return &openError{msg: fmt.Sprintf(format, args...)}
}

// bitmapsEnabled reports whether the image has bitmaps qemu would load.
func (q *Image) bitmapsEnabled() bool {
	b := q.h.bitmaps
	return b != nil && q.h.autoclear&autoclearBitmaps != 0 && b.nbBitmaps > 0
}

// loadBitmapTable reads a bitmap's table (bounded by bmeMaxPhysSize) and
// checks its entries (qemu's bitmap_table_load).
func (q *Image) loadBitmapTable(bm *bitmapDirEntry) ([]uint64, error) {
	raw := make([]byte, int64(bm.tableSize)*8)
	if bm.tableOffset <= uint64(maxHostOffset) {
		if err := q.file.ReadPadded(raw, int64(bm.tableOffset)); err != nil {
			return nil, err
		}
	}
	t := make([]uint64, bm.tableSize)
	for i := range t {
		t[i] = be.Uint64(raw[i*8:])
		if !validBitmapEntry(t[i], q.clusterSize) {
			return nil, image.Errorf(image.ErrCorrupt, "Invalid argument")
		}
	}
	return t, nil
}

// validBitmapEntry is qemu's check_table_entry.
func validBitmapEntry(e uint64, cs int64) bool {
	if e&bmeTableReservedMask != 0 {
		return false
	}
	off := e & bmeTableOffsetMask
	return off == 0 || e&bmeTableAllOnes == 0 && off%uint64(cs) == 0
}

// countBitmaps counts the bitmap directory, tables and data clusters.
func (c *checker) countBitmaps() error {
	q := c.q
	if !q.bitmapsEnabled() {
		return nil
	}
	b := q.h.bitmaps
	c.inc(int64(b.directoryOffset), int64(b.directorySize))
	list, err := q.loadBitmapDir()
	if err != nil {
		c.res.corruptions++
		return image.Errorf(image.ErrCorrupt, "Invalid argument")
	}
	for i := range list {
		bm := &list[i]
		c.inc(int64(bm.tableOffset), int64(bm.tableSize)*8)
		t, err := q.loadBitmapTable(bm)
		if err != nil {
			c.res.corruptions++
			return err
		}
		for _, e := range t {
			if off := int64(e & bmeTableOffsetMask); off != 0 {
				c.inc(off, c.cs)
			}
		}
	}
	return nil
}
