package qcow2

import (
	"errors"
	"math"
	"syscall"

	"qimg/image"
)

// Repairs of check -r: refcount entries, COPIED flags, the dirty and
// corrupt bits. They are written straight to the image file (the check
// holds the metadata lock and refreshes the cached tables afterwards), in
// this order: refcounts first, then the flags of L1 and L2 entries that
// depend on them, then, flushed, the header bits that call the image
// clean.

// writeMeta writes repaired metadata, refusing to overwrite the header or
// the tables a repair must not touch (qemu's overlap check before every
// metadata write).
func (c *checker) writeMeta(p []byte, off int64) error {
	return c.writeMetaIgnoring(p, off, false)
}

// writeMetaIgnoring is writeMeta; ignoreL2 allows overwriting an active
// L2 table (the one being repaired).
func (c *checker) writeMetaIgnoring(p []byte, off int64, ignoreL2 bool) error {
	if what := c.overlaps(off, int64(len(p)), ignoreL2); what != "" {
		c.signalCorruption("Preventing invalid write on metadata (overlaps with %s)", what)
		return errIO
	}
	if err := c.q.writeMeta(p, off); err != nil {
		return image.ErrnoError(err)
	}
	return nil
}

// overlaps names the structure [off, off+n) would overwrite among the
// header, the active L1 table, the refcount table, the snapshot table,
// the snapshots' L1 tables, the active L2 tables and the refcount blocks, checked in qemu's order
// on whole clusters.
func (c *checker) overlaps(off, n int64, ignoreL2 bool) string {
	q := c.q
	cs := c.cs
	if off < cs {
		return "qcow2_header"
	}
	n = (off&(cs-1) + n + cs - 1) &^ (cs - 1)
	off &^= cs - 1
	in := func(start, length int64) bool {
		return length > 0 && off < start+length && start < off+n
	}
	switch {
	case in(int64(q.h.l1TableOffset), int64(q.h.l1Size)*8):
		return "active L1 table"
	case in(c.stored.tableOffset, int64(len(c.stored.table))*8):
		return "refcount table"
	case q.h.nbSnapshots > 0 && in(int64(q.h.snapshotsOffset&(1<<63-1)), c.snapshotsSize):
		return "snapshot table"
	}
	for _, sn := range c.snapTable {
		if sn.l1Size != 0 && in(int64(sn.l1TableOffset&(1<<62-1)), int64(sn.l1Size)*8) {
			return "inactive L1 table"
		}
	}
	if !ignoreL2 {
		for _, e := range q.l1 {
			if l2 := l1Entry(e).l2Offset(); l2 != 0 && in(l2, cs) {
				return "active L2 table"
			}
		}
	}
	for _, e := range c.stored.table {
		if b := int64(e & refcountTableOffsetMask); b != 0 && in(b, cs) {
			return "refcount block"
		}
	}
	return ""
}

// setStored changes the stored refcount of cluster ci, whose refcount
// block exists, in the cached block; it is written back when the check
// moves to another block or flushes its repairs (qemu's update_refcount
// through its refcount block cache, with the events it raises).
func (c *checker) setStored(ci int64, v uint64) error {
	c.q.event(image.EvRefblockAlloc)
	c.q.event(image.EvRefblockLoad)
	s := c.stored
	f := s.fmt
	if _, err := s.get(ci); err != nil {
		return err
	}
	i := ci & (f.perBlock - 1)
	f.set1(s.cacheBuf, i, v)
	lo, hi := f.byteRange(i, i+1)
	if !s.dirty {
		s.dirty, s.dirtyLo, s.dirtyHi = true, lo, hi
	}
	s.dirtyLo, s.dirtyHi = min(s.dirtyLo, lo), max(s.dirtyHi, hi)
	return nil
}

// writeBack writes the repairs held in the cached refcount block. A
// write that fails is tried once more, as qemu's cache keeps a block
// whose write failed and writes it again at the next flush (a passing
// fault leaves the repair complete); when that fails too, the block's
// repairs are dropped and the error kept for flushRepairs.
func (s *storedRefs) writeBack() {
	if !s.dirty {
		return
	}
	s.dirty = false
	off := int64(s.table[s.cacheIndex]&refcountTableOffsetMask) + s.dirtyLo
	var err error
	for range 2 {
		s.q.event(image.EvRefblockUpdatePart)
		if err = s.q.writeMeta(s.cacheBuf[s.dirtyLo:s.dirtyHi], off); err == nil {
			return
		}
	}
	s.cacheIndex = -1
	if s.writeErr == nil {
		s.writeErr = image.ErrnoError(err)
	}
}

// discard drops a cluster the repair freed, as qemu does (best effort:
// the data is garbage either way).
func (c *checker) discard(ci int64) {
	off := ci * c.cs
	if size := c.q.file.Size(); off < size {
		_ = c.q.file.Discard(off, min(c.cs, size-off))
	}
}

// writeL1Entry sets active L1 entry i.
func (c *checker) writeL1Entry(i int, e uint64) error {
	q := c.q
	var b [8]byte
	be.PutUint64(b[:], e)
	off := int64(q.h.l1TableOffset) + int64(i)*8
	q.event(image.EvL1Update)
	if err := q.writeMeta(b[:], off); err != nil {
		return image.ErrnoError(err)
	}
	q.l1[i] = e
	q.l2cache.clear()
	return nil
}

// writeL2Table writes back an active L2 table whose flags were repaired.
func (c *checker) writeL2Table(t []byte, off int64) error {
	if err := c.writeMetaIgnoring(t, off, true); err != nil {
		c.logf("ERROR: Could not write L2 table; metadata overlap check failed: %v", err)
		return err
	}
	c.q.l2cache.drop(off)
	return nil
}

// flushRepairs writes the repaired refcounts and makes them durable, as
// qemu's flush of the image writes its refcount block cache between its
// two flush events, then drops what the image had cached of them.
func (c *checker) flushRepairs() error {
	c.q.event(image.EvFlushToOS)
	c.stored.writeBack()
	if err := c.stored.writeErr; err != nil {
		return err
	}
	c.q.event(image.EvFlushToDisk)
	if err := c.flushFile(); err != nil {
		return err
	}
	return c.refresh()
}

// flushFile flushes the image file, twice if the first fails (qemu
// flushes again when it closes the image: a passing fault costs the
// repair nothing); a failure is told by its errno's words alone, as
// qemu-img's "Check failed: Input/output error".
func (c *checker) flushFile() error {
	err := c.q.file.Flush()
	if err != nil {
		err = c.q.file.Flush()
	}
	if err != nil {
		return image.ErrnoError(err)
	}
	return nil
}

// refresh reloads what a writable image caches of the metadata a repair
// changed: refcount table and blocks, L2 tables.
func (c *checker) refresh() error {
	q := c.q
	q.l2cache.clear()
	q.freeByte = 0 // the cluster it was in may have been freed
	c.stored.invalidate()
	if q.rc != nil {
		q.rc.blocks.clear()
		if err := q.rc.load(); err != nil {
			return err
		}
		q.rc.free = 0
	}
	return nil
}

// markClean clears the dirty and corrupt bits after a repair left no
// error (qemu's qcow2_mark_clean and qcow2_mark_consistent).
func (c *checker) markClean() error {
	q := c.q
	if err := c.flushFile(); err != nil {
		return err
	}
	if err := c.refresh(); err != nil {
		return err
	}
	if q.h.version < 3 || q.h.incompatible&(incompatDirty|incompatCorrupt) == 0 {
		return nil
	}
	q.h.incompatible &^= incompatDirty | incompatCorrupt
	var b [8]byte
	be.PutUint64(b[:], q.h.incompatible)
	if err := q.writeMeta(b[:], offIncompatibleFeatures); err != nil {
		return image.ErrnoError(err)
	}
	q.corrupt = false
	return c.flushFile()
}

// growFileFor extends the file so that the refcount block at off lies in
// it (qemu's check_refblocks with FixErrors), and the counts with it.
func (c *checker) growFileFor(uoff uint64) error {
	if uoff > uint64(math.MaxInt64-c.cs) {
		return image.Errorf(image.ErrCorrupt, "Invalid argument")
	}
	off := int64(uoff)
	// the counts grow with the file: a block far beyond the end would
	// make them take memory the image does not justify
	if n := off/c.cs + 1; n > maxCheckClusters || n > max(4*c.refs.len(), 1<<24) {
		c.logf("%s: Could not resize file: File too large", progName())
		return image.Errorf(image.ErrUnsupported, "File too large")
	}
	if err := c.q.file.Truncate(off+c.cs, image.PreallocOff); err != nil {
		c.logf("%s: %v", progName(), err)
		// qemu's strerror words ("File too large"), without what wraps them
		if errno := syscall.Errno(0); errors.As(err, &errno) {
			return errors.New(image.Strerror(errno))
		}
		return err
	}
	c.fileSize = c.q.file.Size()
	n := (c.fileSize + c.cs - 1) / c.cs
	if n > maxCheckClusters {
		return image.Errorf(image.ErrUnsupported, "File too large")
	}
	c.refs.grow(n)
	if off>>c.q.clusterBits >= c.refs.len() {
		return image.Errorf(image.ErrCorrupt, "Invalid argument")
	}
	return nil
}
