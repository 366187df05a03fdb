package qcow2

import (
	"fmt"
	"io"
	"slices"

	"qimg/image"
)

// StoreBitmaps replaces the set of persistent bitmaps, as one transaction:
//
//  1. everything is validated (names, granularities, sizes, limits, the
//     new header) before a byte is written;
//  2. the new bitmap data clusters, bitmap tables and directory are
//     written into newly allocated clusters and made durable;
//  3. the header's bitmaps extension is switched to the new directory in
//     one write of the first cluster (the commit point), made durable;
//  4. the clusters only the old set used are released.
//
// A crash before step 3 leaves the old set (and leaked clusters), after
// it the new one (and at worst leaked clusters of the old one).
func (q *Image) StoreBitmaps(set []image.BitmapUpdate) error {
	if q.rc == nil {
		return image.ErrReadOnly
	}
	if q.h.incompatible&incompatCorrupt != 0 || q.corrupt {
		return image.Errorf(image.ErrCorrupt, "qcow2: Image is corrupt; cannot be opened read/write")
	}
	q.meta.RLock()
	old, err := q.loadBitmapDir()
	q.meta.RUnlock()
	if err != nil {
		return err
	}
	plan, err := q.planBitmaps(old, set)
	if err != nil {
		return err
	}
	if q.h.incompatible&incompatDirty != 0 {
		// stale refcounts: rebuild them before allocating, as qemu does
		// when it opens a dirty image read/write
		if err := q.repairDirty(); err != nil {
			return err
		}
		if plan, err = q.planBitmaps(old, set); err != nil {
			return err
		}
	}
	if err := q.checkBeforeFreeing(old, plan); err != nil {
		return err
	}
	q.meta.Lock()
	defer q.meta.Unlock()
	if err := q.commitBitmaps(old, plan); err != nil {
		return err
	}
	q.trackStoredBitmaps(set)
	return nil
}

// bitmapPlan is the validated new directory: entries whose table is kept
// (data nil) and entries to write (data set).
type bitmapPlan struct {
	entries []bitmapDirEntry
	data    []*image.DirtyBitmap
	dirSize int
	count   int
}

// bitmapHeader is the current header with the bitmaps extension naming a
// directory of n entries, size bytes at off (none when n is 0).
func (q *Image) bitmapHeader(n int, size, off uint64) (*header, error) {
	nh := *q.h
	nh.extensions = slices.Clone(q.h.extensions)
	// autoclear bits of features qimg does not maintain are dropped, as
	// any writer must
	nh.autoclear &= autoclearKnown
	if n == 0 {
		nh.autoclear &^= autoclearBitmaps
		nh.setExtension(extBitmaps, nil)
		nh.bitmaps = nil
	} else {
		nh.autoclear |= autoclearBitmaps
		nh.bitmaps = &bitmapsExt{nbBitmaps: uint32(n), directorySize: size, directoryOffset: off}
		ext := make([]byte, 24)
		be.PutUint32(ext, nh.bitmaps.nbBitmaps)
		be.PutUint64(ext[8:], size)
		be.PutUint64(ext[16:], off)
		nh.setExtension(extBitmaps, ext)
	}
	if _, err := nh.encode(); err != nil {
		return nil, err
	}
	return &nh, nil
}

func (q *Image) planBitmaps(old []bitmapDirEntry, set []image.BitmapUpdate) (*bitmapPlan, error) {
	if q.h.version < 3 && len(set) > 0 {
		return nil, fmt.Errorf("Cannot store dirty bitmaps in qcow2 v2 files")
	}
	if len(set) > maxBitmaps {
		return nil, fmt.Errorf("Too many persistent bitmaps")
	}
	p := &bitmapPlan{}
	names := map[string]bool{}
	for _, u := range set {
		if u.Name == "" {
			return nil, fmt.Errorf("Bitmap name cannot be empty")
		}
		if names[u.Name] {
			return nil, fmt.Errorf("Bitmap already exists: %s", u.Name)
		}
		names[u.Name] = true
		var e bitmapDirEntry
		data := u.Data
		if u.Data == nil {
			i := slices.IndexFunc(old, func(o bitmapDirEntry) bool { return o.name == u.Name })
			if i < 0 {
				return nil, fmt.Errorf("Dirty bitmap '%s' not found", u.Name)
			}
			e = old[i]
			if int64(1)<<e.granularityBits != u.Granularity {
				return nil, fmt.Errorf("Bitmap '%s': granularity cannot change without new content", u.Name)
			}
			e.flags &^= bmeFlagAuto | bmeFlagInUse
			if !u.InUse && int64(e.tableSize) != q.bitmapTableEntries(e.granularityBits) {
				// qemu refuses a consistent bitmap whose table does not
				// cover the image
				return nil, fmt.Errorf("Bitmap '%s' doesn't satisfy the constraints", u.Name)
			}
			if !u.InUse {
				// written anew, as qemu stores again every bitmap it
				// loaded: the file gets qemu's layout and length
				var err error
				q.meta.RLock()
				data, err = q.loadBitmapData(&e)
				q.meta.RUnlock()
				if err != nil {
					return nil, err
				}
			}
		} else {
			if err := q.checkBitmapConstraints(u.Name, u.Granularity); err != nil {
				return nil, fmt.Errorf("Bitmap '%s' doesn't satisfy the constraints: %w", u.Name, err)
			}
			if u.Data.Size() != q.size || u.Data.Granularity() != u.Granularity {
				return nil, fmt.Errorf("Bitmap '%s' does not match the image size", u.Name)
			}
			e = bitmapDirEntry{typ: bmeTypeDirtyTracking}
			for e.granularityBits = 0; int64(1)<<e.granularityBits < u.Granularity; e.granularityBits++ {
			}
			e.name = u.Name
			e.tableSize = uint32(q.bitmapTableEntries(e.granularityBits))
		}
		if u.Enabled {
			e.flags |= bmeFlagAuto
		}
		if u.InUse {
			e.flags |= bmeFlagInUse
		}
		p.entries = append(p.entries, e)
		p.data = append(p.data, data)
		p.dirSize += e.size()
	}
	if p.dirSize > maxBitmapDirectorySize {
		return nil, fmt.Errorf("Bitmap directory is too large")
	}
	// the new header must fit in the first cluster
	p.count = len(set)
	if _, err := q.bitmapHeader(p.count, uint64(p.dirSize), 0); err != nil {
		return nil, err
	}
	return p, nil
}

// commitBitmaps writes the plan. The caller holds the metadata lock.
func (q *Image) commitBitmaps(old []bitmapDirEntry, p *bitmapPlan) (err error) {
	cs := q.clusterSize
	var allocated [][2]int64
	alloc := func(n int64) (int64, error) {
		off, err := q.rc.alloc(n)
		if err == nil {
			allocated = append(allocated, [2]int64{off, n * cs})
		}
		return off, err
	}
	defer func() {
		if err != nil {
			// nothing names the new clusters: give them back
			for _, a := range allocated {
				_ = q.rc.release(a[0], a[1])
			}
		}
	}()
	buf := make([]byte, cs)
	for i := range p.entries {
		data := p.data[i]
		if data == nil {
			continue
		}
		e := &p.entries[i]
		table := make([]byte, int64(e.tableSize)*8)
		for j := int64(0); j < int64(e.tableSize); j++ {
			if !data.AnyBytes(j*cs, cs) {
				continue
			}
			off, err := alloc(1)
			if err != nil {
				return err
			}
			data.ReadBytes(buf, j*cs)
			if err := q.writeMeta(buf, off); err != nil {
				return err
			}
			be.PutUint64(table[j*8:], uint64(off))
		}
		// the table and the directory are written as they are, not padded
		// to whole clusters: the file keeps the length qemu leaves
		off, err := alloc((int64(len(table)) + cs - 1) / cs)
		if err != nil {
			return err
		}
		if err := q.writeMeta(table, off); err != nil {
			return err
		}
		e.tableOffset = uint64(off)
	}
	var dirOff int64
	if len(p.entries) > 0 {
		dir := encodeBitmapDir(p.entries)
		off, err := alloc((int64(len(dir)) + cs - 1) / cs)
		if err != nil {
			return err
		}
		if err := q.writeMeta(dir, off); err != nil {
			return err
		}
		dirOff = off
	}
	// built after the allocations, which may have moved the refcount
	// table (and updated the header for it)
	h, err := q.bitmapHeader(p.count, uint64(p.dirSize), uint64(dirOff))
	if err != nil {
		return err
	}
	// the new tables, data and directory are durable before the header
	// names them
	if err := q.file.Flush(); err != nil {
		return err
	}
	enc, err := h.encode()
	if err != nil {
		return err
	}
	first := make([]byte, cs)
	copy(first, enc)
	if err := q.writeMeta(first, 0); err != nil {
		return err
	}
	oldDir, oldDirSize := int64(0), int64(0)
	if b := q.h.bitmaps; b != nil && q.h.autoclear&autoclearBitmaps != 0 && b.nbBitmaps > 0 {
		oldDir, oldDirSize = int64(b.directoryOffset), int64(b.directorySize)
	}
	q.h = h
	allocated = nil // named by the header now
	if err := q.file.Flush(); err != nil {
		return err
	}
	q.releaseOldBitmaps(old, p)
	if oldDirSize > 0 && oldDir >= cs {
		_ = q.rc.release(oldDir, oldDirSize)
	}
	return q.file.Flush()
}

// releaseOldBitmaps frees the clusters of the old bitmaps whose tables
// the new set does not keep. The new set is committed already: a cluster
// that cannot be freed (a table that cannot be read, a refcount already
// zero) stays as it is, a leak at worst, as in qemu.
func (q *Image) releaseOldBitmaps(old []bitmapDirEntry, p *bitmapPlan) {
	kept := map[uint64]bool{}
	for i, e := range p.entries {
		if p.data[i] == nil {
			kept[e.tableOffset] = true
		}
	}
	cs := q.clusterSize
	release := func(off, length int64) {
		if off >= cs && off < q.file.Size() {
			_ = q.rc.release(off, length)
		}
	}
	for i := range old {
		e := &old[i]
		if kept[e.tableOffset] {
			continue
		}
		if t, err := q.loadBitmapTableOf(e); err == nil {
			for _, v := range t {
				if off := int64(v & bmeTableOffsetMask); off != 0 {
					release(off, cs)
				}
			}
		}
		release(int64(e.tableOffset), int64(e.tableSize)*8)
	}
}

// checkBeforeFreeing refuses to store a set that releases the clusters of
// bitmaps read from the file when the image's references do not add up:
// a bitmap table of a hostile or damaged image may point at clusters that
// hold guest data or metadata, and freeing them would hand them out
// again. The image is unchanged when it refuses.
func (q *Image) checkBeforeFreeing(old []bitmapDirEntry, p *bitmapPlan) error {
	kept := map[uint64]bool{}
	for i, e := range p.entries {
		if p.data[i] == nil {
			kept[e.tableOffset] = true
		}
	}
	frees := false
	for _, e := range old {
		if !kept[e.tableOffset] {
			frees = true
		}
	}
	if !frees {
		return nil
	}
	res, err := q.Check(0, io.Discard)
	if err != nil {
		return err
	}
	if res.Corruptions > 0 || res.CheckErrors > 0 {
		return image.Errorf(image.ErrCorrupt, "%s: the image has %d refcount errors; freeing bitmap clusters could free data still in use (repair it with 'qimg check -r all')", q.filename, res.Corruptions+res.CheckErrors)
	}
	return nil
}
