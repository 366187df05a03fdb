package qcow2

import (
	"fmt"

	"qimg/image"
)

// Counting the references of an L1 table and its L2 tables (qemu's
// check_refcounts_l1 and check_refcounts_l2). The L2 tables are read by a
// second goroutine, in L1 order, tables adjacent in the file in one read,
// while this one counts: the counts and the messages come out in qemu's
// order, and the reads overlap the counting.

const (
	// l2BatchBytes is the most one read of adjacent L2 tables takes.
	l2BatchBytes = 4 << 20
	// l2Buffers is how many batches are in flight.
	l2Buffers = 3
	// l2AllAlloc are the allocation bits of a subcluster bitmap.
	l2AllAlloc = 0xffffffff
)

// l2Batch is a run of L1 entries whose L2 tables were read together.
type l2Batch struct {
	first, count int // into the list of used L1 entries
	buf          []byte
	err          error
}

// countL1 counts the L1 table of n entries at off, its L2 tables and the
// clusters they reference; active is the image's own table (fragmentation
// statistics and COPIED records are kept for it only).
func (c *checker) countL1(off, n int64, active bool) error {
	if n == 0 {
		return nil
	}
	c.inc(off, n*8)
	if c.failed != nil {
		return c.failed
	}
	raw := make([]byte, n*8) // n is bounded by maxL1Bytes/8
	if err := c.readPadded(raw, off); err != nil {
		c.logf("ERROR: I/O error in check_refcounts_l1")
		c.res.checkErrors++
		return err
	}
	var used []int
	for i := int64(0); i < n; i++ {
		if be.Uint64(raw[i*8:]) != 0 {
			used = append(used, int(i))
		}
	}
	if len(used) == 0 {
		return nil
	}
	cs := c.cs
	entry := func(k int) uint64 { return be.Uint64(raw[used[k]*8:]) }
	l2off := func(k int) int64 { return l1Entry(entry(k)).l2Offset() }

	batchTables := max(1, int(l2BatchBytes/cs))
	free := make(chan []byte, l2Buffers)
	for range l2Buffers {
		free <- make([]byte, int64(min(batchTables, len(used)))*cs)
	}
	out := make(chan l2Batch, l2Buffers)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(out)
		for k := 0; k < len(used); {
			var buf []byte
			select {
			case buf = <-free:
			case <-done:
				return
			}
			j := k + 1
			for j < len(used) && j-k < batchTables && l2off(j) == l2off(j-1)+cs {
				j++
			}
			b := l2Batch{first: k, count: j - k, buf: buf[:int64(j-k)*cs]}
			b.err = c.readPadded(b.buf, l2off(k))
			select {
			case out <- b:
			case <-done:
				return
			}
			if b.err != nil {
				return
			}
			k = j
		}
	}()
	for b := range out {
		for t := 0; t < b.count; t++ {
			k := b.first + t
			e := entry(k)
			if e&l1ReservedMask != 0 {
				c.logf("ERROR found L1 entry with reserved bits set: %x", e)
				c.res.corruptions++
			}
			l2 := l1Entry(e).l2Offset()
			c.inc(l2, cs)
			if l2&(cs-1) != 0 {
				c.logf("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", l2)
				c.res.corruptions++
			}
			if b.err != nil {
				c.logf("ERROR: I/O error in check_refcounts_l2")
				c.res.checkErrors++
				return b.err
			}
			if err := c.countL2(b.buf[int64(t)*cs:int64(t+1)*cs], l2, active); err != nil {
				return err
			}
		}
		free <- b.buf[:cap(b.buf)]
	}
	return nil
}

// readPadded reads the image file at off, zeroes beyond its end as qemu
// reads them.
func (c *checker) readPadded(p []byte, off int64) error {
	if off < 0 || uint64(off)+uint64(len(p)) > maxReadOffset {
		return errIO // beyond what qemu reads (BDRV_MAX_LENGTH)
	}
	return c.q.file.ReadPadded(p, off)
}

// countL2 counts the clusters the L2 table t (read from l2off) references
// and checks its entries.
func (c *checker) countL2(t []byte, l2off int64, active bool) error {
	q := c.q
	cs := c.cs
	bits := q.clusterBits
	ext := q.extendedL2
	dataFile := q.cls.dataFile
	step := 8
	if ext {
		step = 16
	}
	n := len(t) / step
	refs := c.refs
	fileSize := c.fileSize
	var next int64
	for i := 0; i < n; i++ {
		e := be.Uint64(t[i*step:])
		var bm uint64
		if ext {
			bm = be.Uint64(t[i*step+8:])
		}
		if e == 0 && bm == 0 {
			continue
		}
		if e&oflagCompressed != 0 {
			c.countCompressed(e, bm, i, active)
			continue
		}
		if e&l2ReservedMask != 0 {
			c.logf("ERROR found l2 entry with reserved bits set: %x", e)
			c.res.corruptions++
		}
		off := int64(e & l2OffsetMask)
		zero := e&oflagZero != 0 && !ext
		if off == 0 && (zero || !dataFile || e&oflagCopied == 0) {
			// unallocated, or zero without a host cluster
			if !zero && bm&l2AllAlloc != 0 {
				c.res.corruptions++
				c.logf("ERROR: Unallocated cluster has non-zero subcluster allocation map")
			}
			continue
		}
		// a normal cluster, or a zero cluster keeping its host cluster
		if (bm>>32)&bm != 0 {
			c.res.corruptions++
			c.logf("ERROR offset=%x: Allocated cluster has corrupted subcluster allocation bitmap", off)
		}
		if off&(cs-1) != 0 {
			c.res.corruptions++
			hasData := e&oflagZero == 0
			if ext {
				hasData = bm&l2AllAlloc != 0
			}
			if hasData {
				c.logf("ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted.", off)
			} else {
				fixed, err := c.fixUnalignedZero(l2off, i, off, active)
				if err != nil {
					return err
				}
				if fixed {
					continue
				}
			}
		}
		if active {
			c.res.allocated++
			if next != 0 && off != next {
				c.res.fragmented++
			}
			next = off + cs
		}
		if dataFile {
			if active && e&oflagCopied == 0 {
				c.copiedSlow = true
			}
			continue
		}
		k := off >> bits
		if off < fileSize && off&(cs-1) == 0 {
			// the common case, inline: an aligned cluster in the file
			if v := refs.c[k]; v < refs.fast {
				refs.c[k] = v + 1
			} else {
				c.inc1(k)
			}
		} else {
			// beyond the end of the file, or unaligned (two clusters)
			c.inc(off, cs)
			c.copiedSlow = c.copiedSlow || active
			continue
		}
		if active {
			switch {
			case k >= int64(len(c.copiedSet))*64:
				c.copiedSlow = true
			case e&oflagCopied != 0:
				c.copiedSet.set(k)
			default:
				c.copiedClear.set(k)
			}
		}
	}
	return nil
}

// countCompressed counts the host bytes of a compressed cluster (entry i
// of its table).
func (c *checker) countCompressed(e, bm uint64, i int, active bool) {
	q := c.q
	x := 62 - (q.clusterBits - 8)
	if e&oflagCopied != 0 {
		c.logf("ERROR: coffset=0x%x: copied flag must never be set for compressed clusters", e&(1<<x-1))
		e &^= oflagCopied
		c.res.corruptions++
	}
	if q.cls.dataFile {
		c.logf("ERROR compressed cluster %d with data file, entry=0x%x", i, e)
		c.res.corruptions++
		return
	}
	if bm != 0 {
		c.logf("ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%x", i, e)
		c.res.corruptions++
		return
	}
	off, length := compressedDescriptor(l2Entry(e), q.clusterBits)
	c.inc(off, length)
	if active {
		// compressed clusters count as fragmented, as in qemu: their
		// sectors are read again for each neighbour
		c.res.allocated++
		c.res.compressed++
		c.res.fragmented++
	}
}

// fixUnalignedZero handles a zero cluster whose (unused) host offset is
// not aligned: with FixErrors the entry becomes a plain zero entry (qemu's
// fix_l2_entry_by_zero). It reports whether the entry was fixed.
func (c *checker) fixUnalignedZero(l2off int64, i int, off int64, active bool) (bool, error) {
	verb := "ERROR"
	if c.fix&image.FixErrors != 0 {
		verb = "Repairing"
	}
	c.logf("%s offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.", verb, off)
	if c.fix&image.FixErrors == 0 {
		return false, nil
	}
	step := int64(8)
	var e [16]byte
	if c.q.extendedL2 {
		step = 16
	} else {
		be.PutUint64(e[:], oflagZero)
	}
	at := l2off + int64(i)*step
	if what := c.overlaps(at, step, active); what != "" {
		// something is seriously wrong: the check stops here, as qemu's
		c.signalCorruption("Preventing invalid write on metadata (overlaps with %s)", what)
		c.logf("ERROR: Overlap check failed")
		c.res.checkErrors++
		return false, errIO
	}
	if err := c.q.writeMeta(e[:step], at); err != nil {
		c.res.checkErrors++
		c.logf("ERROR: Failed to overwrite L2 table entry: %v", err)
		return false, nil
	}
	if err := c.q.file.Flush(); err != nil {
		return false, fmt.Errorf("Could not flush: %w", err)
	}
	c.res.corruptions--
	c.res.corruptionsFixed++
	return true, nil
}
