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

// checkBitmap is one directory entry as the check needs it.
type checkBitmap struct {
	name        string
	tableOffset uint64
	tableSize   uint32
	flags       uint32
}

// bitmapsEnabled reports whether the image has bitmaps qemu would load.
func (q *Image) bitmapsEnabled() bool {
	b := q.h.bitmaps
	return b != nil && q.h.autoclear&autoclearBitmaps != 0 && b.nbBitmaps > 0
}

// loadBitmapList reads and validates the bitmap directory as qemu's
// bitmap_list_load does.
func (q *Image) loadBitmapList() ([]checkBitmap, error) {
	b := q.h.bitmaps
	if b.directorySize == 0 {
		return nil, openErrorf("Requested bitmap directory size is zero")
	}
	if b.directorySize > maxBitmapDirectorySize {
		return nil, openErrorf("Requested bitmap directory size is too big")
	}
	dir := make([]byte, b.directorySize) // bounded just above
	if b.directoryOffset > uint64(maxHostOffset) {
		clear(dir)
	} else if err := q.file.ReadPadded(dir, int64(b.directoryOffset)); err != nil {
		return nil, openErrorf("Failed to read bitmap directory: %v", err)
	}
	virtual := uint64(q.size)
	var list []checkBitmap
	size := len(dir)
	e := 0
	for e < size {
		if e+bmeEntryHeaderSize > size {
			return nil, openErrorf("Broken bitmap directory")
		}
		if len(list) >= int(b.nbBitmaps) {
			return nil, openErrorf("More bitmaps found than specified in header extension")
		}
		d := dir[e:]
		bm := checkBitmap{tableOffset: be.Uint64(d), tableSize: be.Uint32(d[8:]), flags: be.Uint32(d[12:])}
		typ, gran := d[16], d[17]
		nameSize := int(be.Uint16(d[18:]))
		extra := int(be.Uint32(d[20:]))
		next := e + (bmeEntryHeaderSize+extra+nameSize+7)&^7
		if extra > size || next > size {
			return nil, openErrorf("Broken bitmap directory")
		}
		if extra != 0 {
			return nil, openErrorf("Bitmap extra data is not supported")
		}
		bm.name = string(d[bmeEntryHeaderSize : bmeEntryHeaderSize+nameSize])
		phys := uint64(bm.tableSize) * uint64(q.clusterSize)
		bad := bm.tableSize == 0 || bm.tableOffset == 0 || bm.tableOffset%uint64(q.clusterSize) != 0 ||
			bm.tableSize > bmeMaxTableSize || gran > bmeMaxGranularityBits || gran < bmeMinGranularityBits ||
			bm.flags&bmeReservedFlags != 0 || nameSize > bmeMaxNameSize || typ != bmeTypeDirtyTracking ||
			phys > bmeMaxPhysSize ||
			bm.flags&bmeFlagInUse == 0 && virtual > (phys*8)<<gran
		if bad {
			return nil, openErrorf("Bitmap '%s' doesn't satisfy the constraints", bm.name)
		}
		list = append(list, bm)
		e = next
	}
	if len(list) != int(b.nbBitmaps) {
		return nil, openErrorf("Less bitmaps found than specified in header extension")
	}
	return list, nil
}

// loadBitmapTable reads a bitmap's table (bounded by bmeMaxPhysSize) and
// checks its entries (qemu's bitmap_table_load).
func (q *Image) loadBitmapTable(bm checkBitmap) ([]uint64, error) {
	raw := make([]byte, int64(bm.tableSize)*8)
	if bm.tableOffset > uint64(maxHostOffset) {
		clear(raw)
	} else if err := q.file.ReadPadded(raw, int64(bm.tableOffset)); err != nil {
		return nil, err
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

// checkBitmapsLoad fails as qemu's open fails on bitmaps it cannot load.
func (c *checker) checkBitmapsLoad() error {
	q := c.q
	if !q.bitmapsEnabled() {
		return nil
	}
	list, err := q.loadBitmapList()
	if err != nil {
		return err
	}
	for _, bm := range list {
		if bm.flags&bmeFlagInUse != 0 {
			continue // qemu does not load the data of a bitmap in use
		}
		if _, err := q.loadBitmapTable(bm); err != nil {
			return openErrorf("Could not read bitmap_table table from image for bitmap '%s': %v", bm.name, err)
		}
	}
	return nil
}

// countBitmaps counts the bitmap directory, tables and data clusters.
func (c *checker) countBitmaps() error {
	q := c.q
	if !q.bitmapsEnabled() {
		return nil
	}
	b := q.h.bitmaps
	c.inc(int64(b.directoryOffset), int64(b.directorySize))
	list, err := q.loadBitmapList()
	if err != nil {
		c.res.corruptions++
		return image.Errorf(image.ErrCorrupt, "Invalid argument")
	}
	for _, bm := range list {
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
