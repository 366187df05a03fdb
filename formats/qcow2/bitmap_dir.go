package qcow2

import (
	"fmt"

	"qimg/image"
)

// The bitmap directory and bitmap tables ("== Bitmaps ==" in the
// specification), read and written for qimg bitmap. A directory entry is
// 24 bytes, the extra data, the name, and zero padding to a multiple of 8.

// bitmapDirEntry is one whole bitmap directory entry.
type bitmapDirEntry struct {
	tableOffset     uint64
	tableSize       uint32
	flags           uint32
	typ             uint8
	granularityBits uint8
	name            string
}

// dirEntrySize is the size of an entry with these name and extra sizes.
func dirEntrySize(nameSize, extraSize int) int {
	return (bmeEntryHeaderSize + nameSize + extraSize + 7) &^ 7
}

func (e *bitmapDirEntry) size() int { return dirEntrySize(len(e.name), 0) }

// bitmapTableEntries is the number of bitmap table entries of a bitmap of
// the image's size: one per cluster of bitmap data.
func (q *Image) bitmapTableEntries(granularityBits uint8) int64 {
	bitsN := (q.size + int64(1)<<granularityBits - 1) >> granularityBits
	bytesN := (bitsN + 7) / 8
	return (bytesN + q.clusterSize - 1) / q.clusterSize
}

// loadBitmapDir reads and validates the bitmap directory as qemu's
// bitmap_list_load does when it opens an image: entry count and sizes,
// no extra data, and each entry's constraints (check_dir_entry). A
// directory beyond the end of the file reads as zeroes, as qemu reads it.
// Bitmaps count only when the autoclear bit says the extension is
// consistent.
func (q *Image) loadBitmapDir() ([]bitmapDirEntry, error) {
	if !q.bitmapsEnabled() {
		return nil, nil
	}
	b := q.h.bitmaps
	if b.directorySize == 0 {
		return nil, openErrorf("Requested bitmap directory size is zero")
	}
	if b.directorySize > maxBitmapDirectorySize {
		return nil, openErrorf("Requested bitmap directory size is too big")
	}
	dir := make([]byte, b.directorySize) // bounded just above
	if b.directoryOffset <= uint64(maxHostOffset) {
		if err := q.file.ReadPadded(dir, int64(b.directoryOffset)); err != nil {
			return nil, openErrorf("Failed to read bitmap directory: %v", err)
		}
	}
	var out []bitmapDirEntry
	for off := 0; off < len(dir); {
		if off+bmeEntryHeaderSize > len(dir) {
			return nil, openErrorf("Broken bitmap directory")
		}
		if len(out) >= int(b.nbBitmaps) {
			return nil, openErrorf("More bitmaps found than specified in header extension")
		}
		d := dir[off:]
		nameSize := int(be.Uint16(d[18:]))
		extraSize := int(be.Uint32(d[20:]))
		next := off + dirEntrySize(nameSize, extraSize)
		if extraSize > len(dir) || next > len(dir) {
			return nil, openErrorf("Broken bitmap directory")
		}
		if extraSize != 0 {
			return nil, openErrorf("Bitmap extra data is not supported")
		}
		e := bitmapDirEntry{
			tableOffset:     be.Uint64(d),
			tableSize:       be.Uint32(d[8:]),
			flags:           be.Uint32(d[12:]),
			typ:             d[16],
			granularityBits: d[17],
			name:            string(d[bmeEntryHeaderSize : bmeEntryHeaderSize+nameSize]),
		}
		if err := q.checkDirEntry(&e); err != nil {
			return nil, err
		}
		out = append(out, e)
		off = next
	}
	if len(out) != int(b.nbBitmaps) {
		return nil, openErrorf("Less bitmaps found than specified in header extension")
	}
	return out, nil
}

// checkDirEntry checks one entry as qemu's check_dir_entry does.
func (q *Image) checkDirEntry(e *bitmapDirEntry) error {
	phys := uint64(e.tableSize) * uint64(q.clusterSize)
	bad := e.tableSize == 0 || e.tableOffset == 0 || e.tableOffset%uint64(q.clusterSize) != 0 ||
		e.tableSize > bmeMaxTableSize || e.granularityBits > bmeMaxGranularityBits ||
		e.granularityBits < bmeMinGranularityBits || e.flags&bmeReservedFlags != 0 ||
		len(e.name) > bmeMaxNameSize || e.typ != bmeTypeDirtyTracking ||
		phys > bmeMaxPhysSize ||
		e.flags&bmeFlagInUse == 0 && uint64(q.size) > (phys*8)<<e.granularityBits
	if bad {
		return openErrorf("Bitmap '%s' doesn't satisfy the constraints", e.name)
	}
	return nil
}

// loadBitmaps fails as qemu's open fails on bitmaps it cannot load
// (qcow2_load_dirty_bitmaps): a directory that breaks the constraints, or
// a bad table of a bitmap that is not in use. Every command answers the
// same for such an image, as every qemu-img command does.
func (q *Image) loadBitmaps() error {
	dir, err := q.loadBitmapDir()
	if err != nil {
		return err
	}
	checked := map[[2]uint64]bool{} // tables shared by several entries are read once
	for i := range dir {
		e := &dir[i]
		key := [2]uint64{e.tableOffset, uint64(e.tableSize)}
		if e.flags&bmeFlagInUse != 0 || checked[key] {
			continue // qemu does not load the data of a bitmap in use
		}
		if _, err := q.loadBitmapTableOf(e); err != nil {
			return &openError{msg: err.Error()}
		}
		if err := q.checkBitmapTableSize(e); err != nil {
			return &openError{msg: err.Error()}
		}
		checked[key] = true
	}
	return nil
}

// encodeBitmapDir lays out a directory.
func encodeBitmapDir(entries []bitmapDirEntry) []byte {
	n := 0
	for i := range entries {
		n += entries[i].size()
	}
	buf := make([]byte, n)
	off := 0
	for i := range entries {
		e := &entries[i]
		d := buf[off:]
		be.PutUint64(d, e.tableOffset)
		be.PutUint32(d[8:], e.tableSize)
		be.PutUint32(d[12:], e.flags)
		d[16] = e.typ
		d[17] = e.granularityBits
		be.PutUint16(d[18:], uint16(len(e.name)))
		copy(d[bmeEntryHeaderSize:], e.name) // no extra data: qemu refuses it
		off += e.size()
	}
	return buf
}

// loadBitmapTableOf reads and checks the table of a directory entry
// (qemu's bitmap_table_load); what lies beyond the end of the file reads
// as zeroes.
func (q *Image) loadBitmapTableOf(e *bitmapDirEntry) ([]uint64, error) {
	t, err := q.loadBitmapTable(e)
	if err != nil {
		return nil, fmt.Errorf("Could not read bitmap_table table from image for bitmap '%s': %w", e.name, err)
	}
	return t, nil
}

// checkBitmapTableSize: the table of a bitmap that is not in use covers
// the image exactly (qemu's load_bitmap_data).
func (q *Image) checkBitmapTableSize(e *bitmapDirEntry) error {
	if int64(e.tableSize) != q.bitmapTableEntries(e.granularityBits) {
		return fmt.Errorf("Could not read bitmap '%s' from image: Invalid argument", e.name)
	}
	return nil
}

// loadBitmapData reads the bits of a bitmap that is not in use.
func (q *Image) loadBitmapData(e *bitmapDirEntry) (*image.DirtyBitmap, error) {
	t, err := q.loadBitmapTableOf(e)
	if err != nil {
		return nil, err
	}
	if err := q.checkBitmapTableSize(e); err != nil {
		return nil, err
	}
	bm := image.NewDirtyBitmap(q.size, int64(1)<<e.granularityBits)
	cs := q.clusterSize
	buf := make([]byte, cs)
	for i, v := range t {
		off := int64(v & bmeTableOffsetMask)
		if off == 0 {
			if v&bmeTableAllOnes != 0 {
				bm.SetAllBytes(int64(i)*cs, cs)
			}
			continue
		}
		if err := q.file.ReadPadded(buf, off); err != nil {
			return nil, fmt.Errorf("Could not read bitmap '%s' from image: %w", e.name, err)
		}
		bm.OrBytes(buf, int64(i)*cs)
	}
	return bm, nil
}

// Bitmaps lists the persistent bitmaps.
func (q *Image) Bitmaps() ([]image.BitmapInfo, error) {
	q.meta.RLock()
	defer q.meta.RUnlock()
	if q.writable && (q.h.incompatible&incompatCorrupt != 0 || q.corrupt) {
		// opened to change its bitmaps, which a corrupt image refuses
		return nil, image.Errorf(image.ErrCorrupt, "qcow2: Image is corrupt; cannot be opened read/write")
	}
	dir, err := q.loadBitmapDir()
	if err != nil {
		return nil, err
	}
	out := make([]image.BitmapInfo, 0, len(dir))
	for _, e := range dir {
		out = append(out, image.BitmapInfo{Name: e.name, Granularity: int64(1) << e.granularityBits,
			Enabled: e.flags&bmeFlagAuto != 0, InUse: e.flags&bmeFlagInUse != 0})
	}
	return out, nil
}

// LoadBitmap reads the bits of the bitmap named name.
func (q *Image) LoadBitmap(name string) (*image.DirtyBitmap, error) {
	q.meta.RLock()
	defer q.meta.RUnlock()
	dir, err := q.loadBitmapDir()
	if err != nil {
		return nil, err
	}
	for i := range dir {
		e := &dir[i]
		if e.name != name {
			continue
		}
		if e.flags&bmeFlagInUse != 0 {
			return nil, fmt.Errorf("Bitmap '%s' is inconsistent and cannot be used", name)
		}
		return q.loadBitmapData(e)
	}
	return nil, fmt.Errorf("Dirty bitmap '%s' not found", name)
}

// DefaultBitmapGranularity is qemu's: the cluster size, at least 4 KiB
// and at most 64 KiB.
func (q *Image) DefaultBitmapGranularity() int64 {
	return min(max(q.clusterSize, 4096), 65536)
}

// CanStoreBitmap checks a new bitmap against the format's limits, in
// qemu's order and words (qcow2_co_can_store_new_dirty_bitmap).
func (q *Image) CanStoreBitmap(name string, granularity int64, others []image.BitmapInfo) error {
	if q.h.version < 3 {
		return fmt.Errorf("Cannot store dirty bitmaps in qcow2 v2 files")
	}
	if err := q.checkBitmapConstraints(name, granularity); err != nil {
		return err
	}
	if q.size == 0 {
		// its table would be empty, which qemu refuses when it opens the
		// image (qemu-img itself fails to store it and drops it)
		return openErrorf("Bitmap '%s' doesn't satisfy the constraints", name)
	}
	dirSize := dirEntrySize(len(name), 0)
	for _, o := range others {
		dirSize += dirEntrySize(len(o.Name), 0)
	}
	if len(others)+1 > maxBitmaps {
		return fmt.Errorf("Maximum number of persistent bitmaps is already reached")
	}
	if dirSize > maxBitmapDirectorySize {
		return fmt.Errorf("Not enough space in the bitmap directory")
	}
	return nil
}

// checkBitmapConstraints is qemu's check_constraints_on_bitmap.
func (q *Image) checkBitmapConstraints(name string, granularity int64) error {
	if granularity <= 0 || granularity&(granularity-1) != 0 {
		return fmt.Errorf("Granularity must be power of 2 and at least 512")
	}
	gbits := uint(0)
	for int64(1)<<gbits < granularity {
		gbits++
	}
	if gbits > bmeMaxGranularityBits {
		return fmt.Errorf("Granularity exceeds maximum (%d bytes)", int64(1)<<bmeMaxGranularityBits)
	}
	if gbits < bmeMinGranularityBits {
		return fmt.Errorf("Granularity is under minimum (%d bytes)", 1<<bmeMinGranularityBits)
	}
	bitmapBytes := ((q.size+granularity-1)/granularity + 7) / 8
	if bitmapBytes > bmeMaxPhysSize || bitmapBytes > bmeMaxTableSize*q.clusterSize {
		return fmt.Errorf("Too much space will be occupied by the bitmap. Use larger granularity")
	}
	if len(name) > bmeMaxNameSize {
		return fmt.Errorf("Name length exceeds maximum (%d characters)", bmeMaxNameSize)
	}
	return nil
}

// SupportsBitmaps reports whether the image can store persistent bitmaps
// at all: version 3 images only.
func (q *Image) SupportsBitmaps() bool { return q.h.version >= 3 }
