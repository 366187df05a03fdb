package qcow2

import (
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

// l1Chunk is how many L1 entries are read at a time: the L1 table is
// never held whole (it may have 4M entries, all naming one L2 table).
const l1Chunk = 64 << 10

// l2Batch is a run of used L1 entries whose L2 tables were read together:
// tables adjacent in the file, or one table that consecutive entries all
// name (read once, counted once per entry, as qemu counts it).
type l2Batch struct {
	entries []uint64
	buf     []byte
	same    bool // every entry names the one table in buf
	l1Err   bool // err is from reading the L1 table
	err     error
}

// table is the L2 table of entry t of the batch.
func (b *l2Batch) table(t int, cs int64) []byte {
	if b.same {
		return b.buf
	}
	return b.buf[int64(t)*cs : int64(t+1)*cs]
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
	cs := c.cs
	batchTables := max(1, int(l2BatchBytes/cs))
	free := make(chan l2Batch, l2Buffers)
	for range l2Buffers {
		free <- l2Batch{buf: make([]byte, int64(min(int64(batchTables), n))*cs),
			entries: make([]uint64, 0, min(n, l1Chunk))}
	}
	out := make(chan l2Batch, l2Buffers)
	done := make(chan struct{})
	defer close(done)
	go c.readL2Batches(off, n, batchTables, free, out, done)
	var used []int // the used entries of a table a run names
	var writes int
	for b := range out {
		if b.l1Err {
			c.logf("ERROR: I/O error in check_refcounts_l1")
			c.res.checkErrors++
			return b.err
		}
		for t, e := range b.entries {
			if e&l1ReservedMask != 0 {
				c.logf("ERROR found L1 entry with reserved bits set: %x", e)
				c.res.corruptions++
			}
			l2 := l1Entry(e).l2Offset()
			c.inc(l2, cs)
			if active {
				c.noteActive(l2 >> c.q.clusterBits)
			}
			if l2&(cs-1) != 0 {
				c.logf("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", l2)
				c.res.corruptions++
			}
			if b.err != nil {
				c.logf("ERROR: I/O error in check_refcounts_l2")
				c.res.checkErrors++
				return b.err
			}
			if !b.same {
				if err := c.countL2(b.table(t, cs), l2, active, nil); err != nil {
					return err
				}
				continue
			}
			// one table counted again and again: its used entries are
			// found once (and again after a repair wrote to it)
			if t == 0 || c.l2Writes != writes {
				if t > 0 {
					if err := c.readPadded(b.buf, l2); err != nil {
						c.logf("ERROR: I/O error in check_refcounts_l2")
						c.res.checkErrors++
						return err
					}
				}
				used = c.usedL2Entries(b.buf, used[:0])
				writes = c.l2Writes
			}
			if err := c.countL2(b.buf, l2, active, used); err != nil {
				return err
			}
		}
		free <- l2Batch{buf: b.buf[:cap(b.buf)], entries: b.entries[:0]}
	}
	return nil
}

// readL2Batches reads the L1 table of n entries at off in chunks and
// sends its used entries with their L2 tables, in L1 order, until done.
func (c *checker) readL2Batches(off, n int64, batchTables int, free chan l2Batch, out chan<- l2Batch, done <-chan struct{}) {
	defer close(out)
	cs := c.cs
	send := func(b l2Batch) bool {
		select {
		case out <- b:
			return b.err == nil
		case <-done:
			return false
		}
	}
	// the buffers of the next batch; pending are its used entries
	var next l2Batch
	select {
	case next = <-free:
	case <-done:
		return
	}
	pending := next.entries
	flush := func() bool {
		if len(pending) == 0 {
			return true
		}
		first := l1Entry(pending[0]).l2Offset()
		b := l2Batch{entries: pending, same: len(pending) > 1 && l1Entry(pending[1]).l2Offset() == first}
		if b.same {
			b.buf = next.buf[:cs]
		} else {
			b.buf = next.buf[:int64(len(pending))*cs]
		}
		b.err = c.readPadded(b.buf, first)
		if !send(b) {
			return false
		}
		select {
		case next = <-free:
		case <-done:
			return false
		}
		pending = next.entries
		return true
	}
	// joins tells whether the entry's table extends the pending batch: the
	// next adjacent table, or the one table a run names (each bounded)
	joins := func(e uint64) bool {
		k := len(pending)
		if k == 0 {
			return true
		}
		first := l1Entry(pending[0]).l2Offset()
		next := l1Entry(e).l2Offset()
		same := next == first && (k == 1 || l1Entry(pending[1]).l2Offset() == first)
		if same {
			return k < l1Chunk
		}
		return k < batchTables && next == l1Entry(pending[k-1]).l2Offset()+cs && (k == 1 || l1Entry(pending[1]).l2Offset() != first)
	}
	raw := make([]byte, min(n, l1Chunk)*8)
	for i := int64(0); i < n; i += l1Chunk {
		chunk := raw[:min(n-i, l1Chunk)*8]
		if err := c.readPadded(chunk, off+i*8); err != nil {
			send(l2Batch{l1Err: true, err: err})
			return
		}
		for j := 0; j < len(chunk); j += 8 {
			e := be.Uint64(chunk[j:])
			if e == 0 {
				continue
			}
			if !joins(e) && !flush() {
				return
			}
			pending = append(pending, e)
		}
	}
	flush()
}

// readPadded reads the image file at off, zeroes beyond its end as qemu
// reads them.
func (c *checker) readPadded(p []byte, off int64) error {
	if off < 0 || uint64(off)+uint64(len(p)) > maxReadOffset {
		return errIO // beyond what qemu reads (BDRV_MAX_LENGTH)
	}
	if err := c.q.file.ReadPadded(p, off); err != nil {
		return image.ErrnoError(err)
	}
	return nil
}

// usedL2Entries appends the indexes of the used entries of table t.
func (c *checker) usedL2Entries(t []byte, idx []int) []int {
	step := 8
	if c.q.extendedL2 {
		step = 16
	}
	for i := 0; i+step <= len(t); i += step {
		if be.Uint64(t[i:]) != 0 || step == 16 && be.Uint64(t[i+8:]) != 0 {
			idx = append(idx, i/step)
		}
	}
	return idx
}

// countL2 counts the clusters the L2 table t (read from l2off) references
// and checks its entries: those listed in used, or all when used is nil.
func (c *checker) countL2(t []byte, l2off int64, active bool, used []int) error {
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
	for k := 0; k < n; k++ {
		i := k
		if used != nil {
			if k >= len(used) {
				break
			}
			i = used[k]
		}
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
			c.noteActive(k)
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
	c.l2Writes++
	if err := c.q.writeMeta(e[:step], at); err != nil {
		c.res.checkErrors++
		c.logf("ERROR: Failed to overwrite L2 table entry: %s", image.Strerror(err))
		return false, nil
	}
	if err := c.flushFile(); err != nil {
		return false, err
	}
	c.res.corruptions--
	c.res.corruptionsFixed++
	return true, nil
}
