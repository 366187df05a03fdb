package qcow2

import (
	"qimg/image"
)

// Changing the refcount width (qemu's qcow2_change_refcount_order). New
// refcount blocks and a new table are allocated through the old
// structures until an allocation walk finds nothing more to allocate
// (allocations change refcounts, so the new blocks must describe
// themselves and the new table too); then the new blocks are filled from
// the old refcounts and written with the new table, and one header write
// switches table and width (the commit point). The old blocks and table
// are then freed through the new structures. Killed before the switch,
// the image keeps its old structures with the new clusters leaked; after
// it, the new ones with the old clusters leaked until they are freed.

// refcountChange is the new refcount structure being built.
type refcountChange struct {
	q        *Image
	enc      *refcounts // encodes entries of the new width
	perBlock int64      // new refcounts per block
	table    []uint64   // new refcount table (host offsets of new blocks)
	steps    *amendProgress
}

// checkRefcountWidth refuses a width too narrow for a refcount the image
// holds, naming the first such cluster as qemu does, after the progress
// qemu's first walk reports up to that cluster. It also refuses a table
// naming one block twice: the walks would read it again and again.
func (q *Image) checkRefcountWidth(order uint32, steps *amendProgress) error {
	q.meta.RLock()
	defer q.meta.RUnlock()
	r := q.rc
	newBits := uint(1) << order
	seen := map[uint64]int64{}
	for ti, e := range r.table {
		off := e & refcountTableOffsetMask
		if off == 0 {
			continue
		}
		if first, ok := seen[off]; ok {
			return image.Corrupt("%s: refcount table entries %d and %d name the same block (%#x)", q.filename, first, ti, off)
		}
		seen[off] = int64(ti)
		if newBits >= r.bits {
			continue
		}
		b, err := r.block(int64(ti))
		if err != nil {
			return err
		}
		for i := range r.perBlock {
			if v := r.get1(b.buf, i); v>>newBits != 0 {
				off := (int64(ti)<<r.blockBits + i) << q.clusterBits
				steps.begin(opRefcountOrder)
				for j := range int64(ti) + 1 {
					steps.status(j, 3*int64(len(r.table)))
				}
				return image.Errorf(nil, "Cannot decrease refcount entry width to %d bits: Cluster at offset %#x has a refcount of %d", newBits, off, v)
			}
		}
	}
	return nil
}

// changeRefcountOrder rewrites the refcount structures with refcounts of
// 1<<order bits; checkRefcountWidth has accepted the width.
func (q *Image) changeRefcountOrder(order uint32, steps *amendProgress) error {
	q.meta.Lock()
	defer q.meta.Unlock()
	if err := q.flushMetaLocked(); err != nil {
		return err
	}
	bits := uint(1) << order
	c := &refcountChange{q: q, steps: steps,
		enc:      &refcounts{bits: bits, max: refcountMax(bits)},
		perBlock: int64(1) << (q.clusterBits + 3 - order)}
	var tableOffset, tableEntries int64
	walk := int64(0)
	for {
		allocated, err := c.walk(false, walk, max(walk+2, 3))
		walk++
		if err != nil {
			c.abandon(tableOffset, tableEntries)
			return err
		}
		if !allocated {
			break
		}
		if tableOffset != 0 {
			if err := q.rc.release(tableOffset, tableEntries*8); err != nil {
				return err
			}
		}
		tableEntries = int64(len(c.table))
		if tableOffset, err = q.rc.allocDeferred(tableEntries * 8 >> q.clusterBits); err != nil {
			c.abandon(0, 0)
			return image.IOError("Failed to allocate the new reftable", err)
		}
	}
	if _, err := c.walk(true, walk, walk+1); err != nil {
		c.abandon(tableOffset, tableEntries)
		return err
	}
	if err := q.writeMeta(encodeL1(c.table), tableOffset); err != nil {
		c.abandon(tableOffset, tableEntries)
		return image.IOError("Failed to write the new reftable", err)
	}
	if err := q.rc.flushPending(); err != nil {
		c.abandon(tableOffset, tableEntries)
		return image.IOError("Failed to flush the refblock cache", err)
	}
	return c.switchTo(order, tableOffset)
}

// walk goes over the old refcounts in the order of the old table and
// hands each new block's worth to the allocation (write false) or to the
// writing of the block (write true); it reports whether it allocated.
// Progress is reported per old table entry as qemu's walk_over_reftable
// reports it: walk index of total walks.
func (c *refcountChange) walk(write bool, index, total int64) (bool, error) {
	q, r := c.q, c.q.rc
	var buf []byte
	if write {
		buf = make([]byte, q.clusterSize)
	}
	allocated := false
	newIndex, pos, empty := int64(0), int64(0), true
	finish := func() error {
		if write {
			if err := c.writeBlock(newIndex, buf, empty); err != nil {
				return err
			}
			clear(buf)
		} else {
			a, err := c.allocBlock(newIndex, empty)
			if err != nil {
				return err
			}
			allocated = allocated || a
		}
		newIndex, pos, empty = newIndex+1, 0, true
		return nil
	}
	// the old table may grow while new blocks are allocated
	for ti := int64(0); ti < int64(len(r.table)); ti++ {
		size := int64(len(r.table))
		c.steps.status(index*size+ti, total*size)
		b, err := r.block(ti)
		if err != nil {
			return false, image.IOError("Failed to retrieve refblock", err)
		}
		if b == nil {
			// no block: zero refcounts, skipped a new block's worth at a
			// time (buf is already zero there)
			for left := r.perBlock; left > 0; {
				if pos >= c.perBlock {
					if err := finish(); err != nil {
						return false, err
					}
				}
				k := min(left, c.perBlock-pos)
				pos, left = pos+k, left-k
			}
			continue
		}
		for i := range r.perBlock {
			if pos >= c.perBlock {
				if err := finish(); err != nil {
					return false, err
				}
			}
			v := r.get1(b.buf, i)
			if write {
				c.enc.set1(buf, pos, v)
			}
			pos++
			empty = empty && v == 0
		}
	}
	if pos > 0 {
		if err := finish(); err != nil {
			return false, err
		}
	}
	size := int64(len(r.table))
	c.steps.status((index+1)*size, total*size)
	return allocated, nil
}

// allocBlock gives new block i a cluster if it holds a refcount and has
// none yet, growing the new table as needed (qemu's alloc_refblock).
func (c *refcountChange) allocBlock(i int64, empty bool) (bool, error) {
	if empty {
		return false, nil
	}
	q := c.q
	if i >= int64(len(c.table)) {
		perCluster := q.clusterSize / 8
		n := (i + perCluster) / perCluster * perCluster
		if n*8 > maxRefcountTableBytes {
			return false, image.Errorf(nil, "This operation would make the refcount table grow beyond the maximum size supported by QEMU, aborting")
		}
		c.table = append(c.table, make([]uint64, n-int64(len(c.table)))...)
	}
	if c.table[i] != 0 {
		return false, nil
	}
	// its refcount goes out with the others before the switch, as
	// qemu's refcount cache holds it (the block's own write fails first)
	off, err := q.rc.allocDeferred(1)
	if err != nil {
		return false, image.IOError("Failed to allocate refblock", err)
	}
	c.table[i] = uint64(off)
	return true, nil
}

// writeBlock writes new block i, which the allocation walks placed.
func (c *refcountChange) writeBlock(i int64, buf []byte, empty bool) error {
	if i < int64(len(c.table)) && c.table[i] != 0 {
		if err := c.q.writeMeta(buf, int64(c.table[i])); err != nil {
			return image.IOError("Failed to write refblock", err)
		}
		return nil
	}
	if !empty {
		return image.Corrupt("%s: refcount block %d was not allocated", c.q.filename, i)
	}
	return nil
}

// switchTo makes the new structures durable, switches the header to them
// and frees the old ones through them.
func (c *refcountChange) switchTo(order uint32, tableOffset int64) error {
	q := c.q
	nh := q.h.clone()
	nh.refcountOrder = order
	nh.refcountTableOffset = uint64(tableOffset)
	nh.refcountTableClusters = uint32(int64(len(c.table)) * 8 >> q.clusterBits)
	if err := q.switchHeader(nh); err != nil {
		c.abandon(tableOffset, int64(len(c.table)))
		return image.IOError("Failed to update the qcow2 header", err)
	}
	old := q.rc
	q.rc = newRefcounts(q)
	if err := q.rc.load(); err != nil {
		return err
	}
	for _, e := range old.table {
		if off := int64(e & refcountTableOffsetMask); off != 0 {
			if err := q.rc.release(off, q.clusterSize); err != nil {
				return err
			}
		}
	}
	if err := q.rc.release(old.tableOffset, old.tableClusters*q.clusterSize); err != nil {
		return err
	}
	return q.loadMetaClusters()
}

// abandon frees, through the old structures, what a refcount change that
// failed before its switch had allocated.
func (c *refcountChange) abandon(tableOffset, tableEntries int64) {
	q := c.q
	for _, off := range c.table {
		if off != 0 {
			_ = q.rc.release(int64(off), q.clusterSize)
		}
	}
	if tableOffset != 0 {
		_ = q.rc.release(tableOffset, tableEntries*8)
	}
}
