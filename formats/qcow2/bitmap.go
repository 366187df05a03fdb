package qcow2

import "qimg/image"

// Bitmap directory entry flags and layout ("=== Bitmap directory ===").
const (
	bmeFlagInUse       = 1 << 0
	bmeFlagAuto        = 1 << 1
	bmeEntryHeaderSize = 24
	bmeMaxNameSize     = 1023
)

// bitmapEntry is one bitmap directory entry, as far as info needs it.
type bitmapEntry struct {
	tableOffset     uint64
	tableSize       uint32
	flags           uint32
	typ             uint8
	granularityBits uint8
	name            string
}

// readBitmapDirectory reads the bitmap directory named by the bitmaps
// extension. Bitmaps count only when the autoclear bit says the extension
// is consistent, as in qemu.
func (q *Image) readBitmapDirectory() ([]bitmapEntry, error) {
	b := q.h.bitmaps
	if b == nil || q.h.autoclear&autoclearBitmaps == 0 || b.nbBitmaps == 0 {
		return nil, nil
	}
	if b.directoryOffset%uint64(q.clusterSize) != 0 {
		return nil, image.Corrupt("%s: bitmap directory offset %#x unaligned", q.filename, b.directoryOffset)
	}
	if b.directoryOffset > uint64(q.file.Size()) || b.directorySize > uint64(q.file.Size())-b.directoryOffset {
		return nil, image.Corrupt("%s: bitmap directory lies beyond the end of the file", q.filename)
	}
	buf := make([]byte, b.directorySize) // bounded by maxBitmapDirectorySize and the file
	if _, err := q.file.ReadAt(buf, int64(b.directoryOffset)); err != nil {
		return nil, err
	}
	var out []bitmapEntry
	off := 0
	for i := uint32(0); i < b.nbBitmaps; i++ {
		if off+bmeEntryHeaderSize > len(buf) {
			return nil, image.Corrupt("%s: bitmap directory is truncated", q.filename)
		}
		e := buf[off:]
		be_ := bitmapEntry{
			tableOffset:     be.Uint64(e),
			tableSize:       be.Uint32(e[8:]),
			flags:           be.Uint32(e[12:]),
			typ:             e[16],
			granularityBits: e[17],
		}
		nameSize := int(be.Uint16(e[18:]))
		extra := int(be.Uint32(e[20:]))
		if nameSize > bmeMaxNameSize || extra > len(buf) {
			return nil, image.Corrupt("%s: bad bitmap directory entry %d", q.filename, i)
		}
		end := bmeEntryHeaderSize + extra + nameSize
		if off+end > len(buf) {
			return nil, image.Corrupt("%s: bitmap directory is truncated", q.filename)
		}
		be_.name = string(e[bmeEntryHeaderSize+extra : end])
		out = append(out, be_)
		off += (end + 7) &^ 7
	}
	return out, nil
}

// bitmapInfo is QAPI's Qcow2BitmapInfo.
type bitmapInfo struct {
	Name        string   `json:"name"`
	Granularity int64    `json:"granularity"`
	Flags       []string `json:"flags"`
}

func bitmapInfos(entries []bitmapEntry) []bitmapInfo {
	out := make([]bitmapInfo, 0, len(entries))
	for _, e := range entries {
		bi := bitmapInfo{Name: e.name, Granularity: int64(1) << (e.granularityBits & 63), Flags: []string{}}
		if e.flags&bmeFlagInUse != 0 {
			bi.Flags = append(bi.Flags, "in-use")
		}
		if e.flags&bmeFlagAuto != 0 {
			bi.Flags = append(bi.Flags, "auto")
		}
		out = append(out, bi)
	}
	return out
}
