package qcow2

import (
	"fmt"

	"qimg/image"
)

// Rebuilding the refcount structure (check -r all when a refcount block
// or a referenced cluster's refcount is missing), as qemu's
// rebuild_refcount_structure does, so that the new layout is qemu's:
//
//  1. for each refcount block that has a referenced cluster, a free
//     cluster (free in the counts) is taken and the block, a slice of the
//     counts, written there;
//  2. free clusters for the new refcount table are taken, and the blocks
//     covering them written again; this repeats while the table grows;
//  3. the table is written and flushed; only then does the header point
//     to it (written and flushed): a crash before leaves the old
//     structure in place, after, the new one complete; the old structure
//     is then leaked, and freed by the leak repair that follows.

// rebuildRefcounts rebuilds the structure and checks again, counting
// what the rebuild fixed (qemu's qcow2_check_refcounts after "Rebuilding
// refcount structure").
func (c *checker) rebuildRefcounts() error {
	old := c.res
	c.logf("Rebuilding refcount structure")
	if err := c.writeNewRefcounts(); err != nil {
		return err
	}
	c.res.corruptions, c.res.leaks = 0, 0
	c.rebuild = false
	c.refs.reset()
	c.fileSize = c.q.file.Size()
	stats := c.res
	if err := c.calculate(false); err != nil {
		return err
	}
	// the statistics are those of the first count
	c.res.allocated, c.res.fragmented, c.res.compressed = stats.allocated, stats.fragmented, stats.compressed
	var fresh int64
	if c.fix&image.FixLeaks != 0 {
		// the old structure is leaked now; leaks the rebuild itself made
		// and could not repair remain
		saved := c.res
		c.res = checkCounts{}
		c.compare(image.FixLeaks)
		if c.rebuild {
			c.logf("ERROR rebuilt refcount structure is still broken")
		}
		fresh = c.res.leaks
		c.res = saved
	}
	if c.res.corruptions < old.corruptions {
		c.res.corruptionsFixed += old.corruptions - c.res.corruptions
	}
	if c.res.leaks < old.leaks {
		c.res.leaksFixed += old.leaks - c.res.leaks
	}
	c.res.leaks += fresh
	return c.flushRepairs()
}

// writeNewRefcounts writes refcount blocks and a refcount table made from
// the counts, and points the header to them.
func (c *checker) writeNewRefcounts() error {
	q := c.q
	var table []uint64
	if _, err := c.writeRefblocks(0, c.refs.len(), &table); err != nil {
		c.res.checkErrors++
		return err
	}
	var tableOffset, tableClusters int64
	for {
		tableClusters = (int64(len(table))*8 + c.cs - 1) / c.cs
		var firstFree int64
		tableOffset = c.allocCounted(tableClusters, &firstFree)
		start := tableOffset >> q.clusterBits
		grown, err := c.writeRefblocks(start, start+tableClusters, &table)
		if err != nil {
			c.res.checkErrors++
			return err
		}
		if !grown {
			break
		}
	}
	buf := make([]byte, len(table)*8)
	for i, e := range table {
		be.PutUint64(buf[i*8:], e)
	}
	if err := c.writeMeta(buf, tableOffset); err != nil {
		c.logf("%s: ERROR writing reftable: %v", progName(), err)
		return err
	}
	// the new structure is complete on disk before the header names it
	if err := c.flushFile(); err != nil {
		return err
	}
	var hdr [12]byte
	be.PutUint64(hdr[:], uint64(tableOffset))
	be.PutUint32(hdr[8:], uint32(tableClusters))
	if err := q.writeMeta(hdr[:], offRefcountTableOffset); err != nil {
		return fmt.Errorf("ERROR setting reftable: %w", image.ErrnoError(err))
	}
	if err := c.flushFile(); err != nil {
		return err
	}
	q.h.refcountTableOffset, q.h.refcountTableClusters = uint64(tableOffset), uint32(tableClusters)
	c.stored.table, c.stored.tableOffset = table, tableOffset
	return c.refresh()
}

// writeRefblocks writes the refcount blocks covering the referenced
// clusters of [first, end), taking clusters for blocks that the new table
// lacks; it reports whether the table grew (qemu's
// rebuild_refcounts_write_refblocks).
func (c *checker) writeRefblocks(first, end int64, table *[]uint64) (bool, error) {
	f := c.stored.fmt
	per := f.perBlock
	bits := c.q.clusterBits
	grown := false
	var firstFree int64
	buf := make([]byte, c.cs)
	for ci := first; ci < end; ci++ {
		if ci >= c.refs.len() || c.refs.get(ci) == 0 {
			continue
		}
		ri := ci / per
		start := ri * per
		var off int64
		if int64(len(*table)) > ri && (*table)[ri] != 0 {
			off = int64((*table)[ri])
		} else {
			firstFree = max(firstFree, start)
			off = c.allocCounted(1, &firstFree)
			if off>>bits >= end {
				// the block that counts this block must be written too
				end = off>>bits + 1
			}
			if int64(len(*table)) <= ri {
				perCluster := c.cs / 8
				n := (ri + 1 + perCluster - 1) / perCluster * perCluster
				if n*8 > maxRefcountTableBytes {
					return false, image.Errorf(image.ErrUnsupported, "ERROR allocating reftable memory: the refcount table would exceed %d bytes", maxRefcountTableBytes)
				}
				nt := make([]uint64, n)
				copy(nt, *table)
				*table = nt
				grown = true
			}
			(*table)[ri] = uint64(off)
		}
		clear(buf)
		for i := int64(0); i < per && start+i < c.refs.len(); i++ {
			if v := c.refs.get(start + i); v != 0 {
				f.set1(buf, i, v)
			}
		}
		if err := c.writeMeta(buf, off); err != nil {
			c.logf("%s: ERROR writing refblock: %v", progName(), err)
			return false, err
		}
		ci = start + per - 1
	}
	return grown, nil
}

// allocCounted takes n free clusters in a row in the counts, from
// *firstFree on, growing the counts past their end if needed; *firstFree
// moves to the first free cluster seen (qemu's alloc_clusters_imrt).
func (c *checker) allocCounted(n int64, firstFree *int64) int64 {
	r := c.refs
	ci := *firstFree
	firstGap := true
	var run int64
	for ; ci < r.len() && run < n; ci++ {
		if r.get(ci) == 0 {
			run++
			if firstGap {
				*firstFree = ci
				firstGap = false
			}
		} else {
			run = 0
		}
	}
	if run < n {
		r.grow(ci + n - run)
	}
	ci -= run
	for i := int64(0); i < n; i++ {
		r.set(ci+i, 1)
	}
	return ci << c.q.clusterBits
}
