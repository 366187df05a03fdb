package vdi

import (
	"sync"

	"qimg/image"
)

// blockPool holds the zero-padded buffers new blocks are written from.
var blockPool = sync.Pool{New: func() any { return make([]byte, blockSize) }}

// WriteAt writes block by block as qemu's vdi_co_pwritev does: a write
// into an unallocated block allocates the next block at the end of the
// data area and writes it whole, zero-padded; then the header (with the
// new allocation count) and the changed block map sectors are written.
func (v *Image) WriteAt(p []byte, off int64) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	first, last := int64(-1), int64(-1)
	done := 0
	var err error
	for done < len(p) && err == nil {
		n := int(min(int64(len(p)-done), blockSize-off%blockSize))
		idx := off / blockSize
		if allocated(v.bmap[idx]) {
			_, err = v.file.WriteAt(p[done:done+n], v.hostOffset(off))
		} else {
			err = v.allocate(idx, p[done:done+n], off%blockSize)
			if err == nil {
				if first < 0 {
					first = idx
				}
				last = idx
			}
		}
		if err == nil {
			done += n
			off += int64(n)
		}
	}
	if first >= 0 {
		if merr := v.writeMetadata(first, last); err == nil {
			err = merr
		}
	}
	return done, err
}

// allocate gives block idx the next free data block and writes data at
// inBlock into it, the rest of the block zeroed.
func (v *Image) allocate(idx int64, data []byte, inBlock int64) error {
	entry := v.h.blocksAllocated
	if entry >= v.h.blocksInImage {
		// a count beyond the block map: allocating would overwrite or
		// place data out of reach; the image needs checking
		return image.Errorf(image.ErrCorrupt, "%s: VDI allocated block count %d is not below the block count %d", v.filename, entry, v.h.blocksInImage)
	}
	if entry < v.inUse {
		// qemu would write the new block over one the map already uses
		return image.Errorf(image.ErrCorrupt, "%s: VDI allocated block count %d is below a block in use (%d); the image needs checking", v.filename, entry, v.inUse-1)
	}
	host := int64(v.h.offsetData) + int64(entry)*blockSize
	if end := host + blockSize; end > v.file.Size() {
		if err := v.file.Truncate(end, image.PreallocOff); err != nil {
			return err
		}
	}
	buf := blockPool.Get().([]byte)
	defer blockPool.Put(buf)
	clear(buf[:inBlock])
	copy(buf[inBlock:], data)
	clear(buf[inBlock+int64(len(data)):])
	if _, err := v.file.WriteAt(buf, host); err != nil {
		return err
	}
	v.bmap[idx] = entry
	v.h.blocksAllocated++
	v.inUse = entry + 1
	return nil
}

// writeMetadata writes the header and the block map sectors that hold
// entries first..last, as qemu does after allocating.
func (v *Image) writeMetadata(first, last int64) error {
	if _, err := v.file.WriteAt(v.h.encode(), 0); err != nil {
		return err
	}
	const perSector = sectorSize / 4
	s0, s1 := first/perSector, last/perSector
	buf := make([]byte, (s1-s0+1)*sectorSize)
	for j := int64(0); j < int64(len(buf))/4; j++ {
		k := s0*perSector + j
		if k < int64(len(v.bmap)) {
			le.PutUint32(buf[4*j:], v.bmap[k])
		}
	}
	_, err := v.file.WriteAt(buf, int64(v.h.offsetBmap)+s0*sectorSize)
	return err
}
