package qcow2

import (
	"errors"
	"slices"
	"syscall"

	"qimg/image"
)

// Truncate grows or shrinks the image; the added part is preallocated as
// asked. Persistent bitmaps take the new size with it.
func (q *Image) Truncate(size int64, prealloc image.Prealloc) error {
	if size%512 != 0 {
		return errors.New("The new size must be a multiple of 512")
	}
	q.meta.Lock()
	defer q.meta.Unlock()
	if err := q.checkWritable(); err != nil {
		return err
	}
	if q.h.nbSnapshots > 0 && q.h.version < 3 {
		// version 2 snapshot entries need not record their size
		return image.Errorf(syscall.ENOTSUP, "Can't resize a v2 image which has snapshots")
	}
	bitmaps, err := q.bitmapsForResize()
	if err != nil {
		return err
	}
	if size == q.size {
		return nil
	}
	if size < q.size {
		err = q.shrink(size, prealloc)
	} else {
		err = q.grow(size, prealloc)
	}
	if err == nil && bitmaps != nil {
		bitmaps.resize(size)
	}
	return err
}

// shrink drops the active image's references to the guest clusters
// beyond the new size and to the L2 tables only they used, frees what no
// longer has a reference and cuts the file after the last cluster still
// in use. qemu records the new size last; qimg first (see below), with
// the same result. The caller holds the metadata lock.
func (q *Image) shrink(size int64, prealloc image.Prealloc) error {
	if prealloc != image.PreallocOff && prealloc != "" {
		return image.Errorf(image.ErrUnsupported, "Preallocation can't be used for shrinking an image")
	}
	cs := q.clusterSize
	l2Span := cs << q.l2Bits
	from := (size + cs - 1) &^ (cs - 1)
	old := q.size
	if q.waitInflight(from>>q.clusterBits, (old+cs-1)>>q.clusterBits) {
		old = q.size
	}
	// the header shrinks first: a process killed while the clusters go
	// leaves them past the end (referenced, unused), never a cut part
	// that reads the backing file's data within the old size
	if err := q.recordSize(size); err != nil {
		return err
	}
	if err := q.barrier(); err != nil {
		return err
	}
	// host clusters whose references go: punched once free
	var dropped []int64
	// clusters beyond the new end, in the table that stays (a table
	// shared with a snapshot is copied first, never cleared in place; a
	// missing one is allocated, as qemu's discard does, for its layout)
	for pos := from; pos < old; {
		n := min(old-pos, (pos/l2Span+1)*l2Span-pos)
		l1i := pos / l2Span
		if l1i < int64(len(q.l1)) && pos%l2Span != 0 {
			t, err := q.l2ForWrite(l1i)
			if err != nil {
				return err
			}
			idx0 := int((pos >> q.clusterBits) & (1<<q.l2Bits - 1))
			k := int((n + cs - 1) >> q.clusterBits)
			var freed []l2Entry
			for i := idx0; i < idx0+k && i < len(t.entries); i++ {
				freed = append(freed, l2Entry(t.entries[i]))
				t.entries[i] = 0
				if q.extendedL2 {
					t.bitmaps[i] = 0
				}
			}
			if err := q.writeL2(t, idx0, idx0+len(freed)); err != nil {
				return err
			}
			for _, e := range freed {
				if err := q.releaseEntry(e); err != nil {
					return err
				}
				dropped = append(dropped, q.ownHostCluster(e))
			}
		}
		pos += n
	}
	// whole tables beyond the new end. Data clusters hold one reference
	// per table that points at them, so dropping a table shared with a
	// snapshot drops the active view's references only, as qemu's copy
	// and discard would; the snapshot's table and data keep theirs.
	keep := l1Entries(size, q.clusterBits, q.l2Bits)
	for i := keep; i < int64(len(q.l1)); i++ {
		off := l1Entry(q.l1[i]).l2Offset()
		if off == 0 {
			continue
		}
		t, err := q.l2Table(off)
		if err != nil {
			return err
		}
		entries := append([]uint64(nil), t.entries...)
		if err := q.setL1(i, 0); err != nil {
			return err
		}
		for _, e := range entries {
			if err := q.releaseEntry(l2Entry(e)); err != nil {
				return err
			}
			dropped = append(dropped, q.ownHostCluster(l2Entry(e)))
		}
		if err := q.releaseLater(off, cs); err != nil {
			return err
		}
		dropped = append(dropped, off)
	}
	if err := q.flushMetaLocked(); err != nil {
		return err
	}
	if q.data != nil {
		// the data file follows the guest size, as qemu cuts it
		if err := q.data.Truncate(size, image.PreallocOff); err != nil {
			return err
		}
	}
	blocks, err := q.rc.dropEmptyBlocks()
	if err != nil {
		return err
	}
	q.punchFree(append(dropped, blocks...))
	fileClusters := (q.file.Size() + cs - 1) >> q.clusterBits
	last, err := q.rc.lastUsed(fileClusters)
	if err != nil {
		return err
	}
	if end := (last + 1) * cs; end < q.file.Size() {
		// a failure here only leaves unused space at the end
		_ = q.file.Truncate(end, image.PreallocOff)
	}
	return nil
}

// ownHostCluster is the image file cluster an entry's data takes alone,
// 0 for none (unallocated, compressed, in an external data file).
func (q *Image) ownHostCluster(e l2Entry) int64 {
	if e.compressed() || q.data != nil {
		return 0
	}
	return e.hostOffset()
}

// punchFree discards, in the image file, the given host clusters that no
// longer have a reference, as qemu's shrink discards what it cuts off (a
// snapshot may still hold some). A failure only leaves space allocated.
func (q *Image) punchFree(clusters []int64) {
	slices.Sort(clusters)
	cs := q.clusterSize
	var runStart, runEnd int64
	for _, off := range clusters {
		if off == 0 || off == runEnd-cs {
			continue
		}
		if n, err := q.rc.get(off >> q.clusterBits); err != nil || n != 0 {
			continue
		}
		if off != runEnd {
			if runEnd > runStart {
				_ = q.file.Discard(runStart, runEnd-runStart)
			}
			runStart = off
		}
		runEnd = off + cs
	}
	if runEnd > runStart {
		_ = q.file.Discard(runStart, runEnd-runStart)
	}
}

// grow enlarges the L1 table when the new size needs it, preallocates,
// makes the new area read as zeroes where a backing file would show
// through, and then records the new size in the header (qemu's
// qcow2_co_truncate order). The caller holds the metadata lock.
func (q *Image) grow(size int64, prealloc image.Prealloc) error {
	if size > 1<<62 || l1Entries(size, q.clusterBits, q.l2Bits)*8 > maxL1Bytes {
		return image.Errorf(image.ErrUnsupported, "The image size is too large for file format 'qcow2' (try using a larger cluster size)")
	}
	switch prealloc {
	case image.PreallocOff, "", image.PreallocMetadata, image.PreallocFalloc, image.PreallocFull:
	default:
		return image.Errorf(image.ErrUnsupported, "Unsupported preallocation mode '%s'", prealloc)
	}
	if (prealloc == image.PreallocOff || prealloc == "") && q.dataFileRaw() {
		// a raw data file reads as the guest disk only where the tables
		// map every cluster: qemu preallocates them
		prealloc = image.PreallocMetadata
	}
	old := q.size
	// falloc and full in the image file allocate every new cluster as
	// data over a file grown with zeroes: nothing shows through
	inFile := (prealloc == image.PreallocFalloc || prealloc == image.PreallocFull) && q.data == nil
	zero := q.backingShowsThrough(old) && !inFile
	if zero && q.h.version < 3 && roundUpTo(old, q.clusterSize) < size {
		// no zero clusters for the whole clusters past the old one: qemu
		// refuses rather than show the backing file
		return image.Errorf(syscall.ENOTSUP, "Failed to zero out new clusters: Operation not supported")
	}
	if zero && q.compressedZeroHead(old, size) {
		// qemu cannot give a compressed cluster zero subclusters
		return image.Errorf(syscall.ENOTSUP, "Failed to zero out new clusters: Operation not supported")
	}
	if need := l1Entries(size, q.clusterBits, q.l2Bits); need > int64(len(q.l1)) {
		if err := q.growL1(need); err != nil {
			return image.IOError("Failed to grow the L1 table", err)
		}
	}
	q.size = size
	switch {
	case inFile:
		if err := q.preallocateFile(old, size, prealloc, q.backingShowsThrough(old)); err != nil {
			return err
		}
	case prealloc == image.PreallocOff || prealloc == "":
		if q.data != nil {
			if err := q.data.Truncate(size, image.PreallocOff); err != nil {
				return err
			}
		}
	default:
		if err := q.preallocate(old, size, prealloc); err != nil {
			return image.IOError("Allocating clusters failed", err)
		}
	}
	if zero {
		if err := q.zeroNewArea(old, size); err != nil {
			return err
		}
	}
	// the tables describe the new area before the header says it exists
	if err := q.flushMetaLocked(); err != nil {
		return err
	}
	if err := q.barrier(); err != nil {
		return err
	}
	return q.recordSize(size)
}

// recordSize makes size the virtual size, in memory and in the header.
func (q *Image) recordSize(size int64) error {
	q.size = size
	q.h.size = uint64(size)
	var b [8]byte
	be.PutUint64(b[:], uint64(size))
	if err := q.writeHeaderBytes(b[:], offSize); err != nil {
		return image.IOError("Failed to update the image size", err)
	}
	return nil
}

// dataFileRaw reports whether the external data file reads as the guest
// disk (data_file_raw).
func (q *Image) dataFileRaw() bool {
	return q.data != nil && q.h.autoclear&autoclearDataFileRaw != 0
}

// backingShowsThrough reports whether guest bytes from old on would read
// the backing file's data: it is longer than the image was.
func (q *Image) backingShowsThrough(old int64) bool {
	return q.backing != nil && q.backing.Size() > old
}

// compressedZeroHead reports whether zeroing [old, size) would have to
// give zero subclusters to a compressed cluster (extended L2 entries, the
// first whole subcluster past old inside a compressed cluster), which
// qemu refuses before it changes anything.
func (q *Image) compressedZeroHead(old, size int64) bool {
	if !q.extendedL2 {
		return false
	}
	zeroStart := roundUpTo(old, q.clusterSize/subclusters)
	if zeroStart >= size || zeroStart%q.clusterSize == 0 {
		return false
	}
	m, err := q.lookup(zeroStart, 1)
	return err == nil && m.typ == ctCompressed
}

// zeroNewArea makes the guest bytes [old, size) read as zeroes instead of
// the backing file's data, as qemu does: zero flags from the first whole
// subcluster (or cluster) on, zeroes written before it. The caller holds
// the metadata lock and has set q.size.
func (q *Image) zeroNewArea(old, size int64) error {
	cs := q.clusterSize
	unit := cs
	if q.extendedL2 {
		unit = cs / subclusters
	}
	zeroStart := roundUpTo(old, unit)
	pos := zeroStart
	if pos < size && pos%cs != 0 {
		n := min(size, roundUpTo(pos, cs)) - pos
		err := q.zeroSubclusters(pos, n)
		if err == errWholeCluster {
			err = q.writeLocked(zeroes[:n], pos)
		}
		if err != nil {
			return err
		}
		pos += n
	}
	// the last cluster is zeroed whole: its part past the end is unused
	l2Span := cs << q.l2Bits
	for end := roundUpTo(size, cs); pos < end; {
		n := min(end-pos, (pos/l2Span+1)*l2Span-pos)
		if err := q.zeroClusters(pos, n, false); err != nil {
			return err
		}
		pos += n
	}
	if zeroStart > old {
		return q.writeLocked(zeroes[:min(zeroStart, size)-old], old)
	}
	return nil
}

// writeLocked writes guest data while the caller holds the metadata lock
// for writing, allocating (and copying on write) where needed.
func (q *Image) writeLocked(p []byte, off int64) error {
	for done := 0; done < len(p); {
		n, err := q.allocWrite(p[done:], off+int64(done))
		if err != nil {
			return err
		}
		done += n
	}
	return nil
}

// straddlingHead returns the guest bytes [from rounded down to unit,
// from), nil when from starts a unit: preallocation gives the cluster
// that holds from a new host cluster, which must keep what the guest read
// there (qemu's copy on write before the new area).
func (q *Image) straddlingHead(from, unit int64) ([]byte, error) {
	inUnit := from & (unit - 1)
	if inUnit == 0 {
		return nil, nil
	}
	head := make([]byte, inUnit)
	if err := q.readGuestLocked(head, from-inUnit); err != nil {
		return nil, err
	}
	return head, nil
}

// preallocUnit is the granularity of qemu's copy on write around a
// preallocated range: the subcluster with extended L2 entries.
func (q *Image) preallocUnit() int64 {
	if q.extendedL2 {
		return q.clusterSize / subclusters
	}
	return q.clusterSize
}

// copyTail writes, after the new end to, the rest of its unit as qemu's
// copy on write leaves it in a newly allocated host cluster: the backing
// file's bytes past the end where the cluster was unallocated, zeroes
// where it read as zeroes. host is where guest offset to lies.
func (q *Image) copyTail(e l2Entry, to, host int64) error {
	n := roundUpTo(to, q.preallocUnit()) - to
	if n == 0 {
		return nil
	}
	tail := make([]byte, n)
	if e&oflagZero == 0 && q.backing != nil {
		if err := q.backing.ReadPadded(tail, to); err != nil {
			return err
		}
	}
	return q.writeData(tail, host, to, true)
}

// zeroReused makes the host clusters [host, host+n) that lie inside the
// image file read as zeroes: preallocation may take clusters freed
// earlier, whose old bytes (a bitmap directory, a snapshot's table) must
// not become guest data. Clusters of an external data file are the
// guest's own and stay as they are.
func (q *Image) zeroReused(host, n int64) error {
	if q.data != nil {
		return nil
	}
	end := min(host+n, q.file.Size())
	if end <= host {
		return nil
	}
	return q.file.WriteZeroes(host, end-host, false)
}

// growL1 moves the L1 table to n entries: the new table is written, then
// the header points at it, then the old one is freed.
func (q *Image) growL1(n int64) error {
	if err := q.flushMetaLocked(); err != nil {
		return err
	}
	q.event(image.EvL1GrowAllocTable)
	newOff, err := q.rc.alloc((n*8 + q.clusterSize - 1) >> q.clusterBits)
	if err != nil {
		return err
	}
	l1 := make([]uint64, n)
	copy(l1, q.l1)
	buf := make([]byte, n*8)
	for i, e := range l1 {
		be.PutUint64(buf[i*8:], e)
	}
	q.event(image.EvL1GrowWriteTable)
	if err := q.writeMeta(buf, newOff); err != nil {
		return q.dropNewL1(newOff, n, err)
	}
	// the new table is on disk before the header names it
	if err := q.barrier(); err != nil {
		return q.dropNewL1(newOff, n, err)
	}
	oldOff, oldSize := int64(q.h.l1TableOffset), int64(q.h.l1Size)
	q.h.l1TableOffset, q.h.l1Size = uint64(newOff), uint32(n)
	var hdr [12]byte
	be.PutUint32(hdr[:], uint32(n))
	be.PutUint64(hdr[4:], uint64(newOff))
	q.event(image.EvL1GrowActivateTable)
	if err := q.writeHeaderBytes(hdr[:], offL1Size); err != nil {
		q.h.l1TableOffset, q.h.l1Size = uint64(oldOff), uint32(oldSize)
		return q.dropNewL1(newOff, n, err)
	}
	if err := q.barrier(); err != nil {
		return err
	}
	q.l1 = l1
	if oldSize > 0 {
		// the grow is done whatever happens to this cleanup: a failed
		// release is tried again with the next flush
		if q.rc.release(oldOff, oldSize*8) != nil {
			return q.releaseLater(oldOff, oldSize*8)
		}
	}
	return nil
}

// dropNewL1 gives back the clusters of a grown L1 table that the header
// does not name (qemu's qcow2_grow_l1_table on failure) and returns err.
func (q *Image) dropNewL1(off, n int64, err error) error {
	if rerr := q.rc.release(off, n*8); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// preallocate allocates L2 tables and data clusters for guest bytes
// [from, to), table by table (each table before its data clusters, as
// qemu allocates them), then extends the data file to the last cluster.
// With extended L2 entries the subclusters stay unallocated, so a backing
// file still shows through.
func (q *Image) preallocate(from, to int64, mode image.Prealloc) error {
	cs := q.clusterSize
	head, err := q.straddlingHead(from, q.preallocUnit())
	if err != nil {
		return err
	}
	lastCluster := (to - 1) >> q.clusterBits
	l2Span := cs << q.l2Bits
	hostEnd := int64(-1)
	for off := from &^ (cs - 1); off < to; {
		l1i := off / l2Span
		end := min(to, (l1i+1)*l2Span)
		c0 := off >> q.clusterBits
		cEnd := (end + cs - 1) >> q.clusterBits
		var t *l2Table
		fresh := l1Entry(q.l1[l1i]).l2Offset() == 0
		if fresh {
			// allocate the table, then its data, then write it once
			l2off, err := q.rc.alloc(1)
			if err != nil {
				return err
			}
			n := 1 << q.l2Bits
			t = &l2Table{offset: l2off, entries: make([]uint64, n)}
			if q.extendedL2 {
				t.bitmaps = make([]uint64, n)
			}
		} else {
			var err error
			if t, err = q.l2ForWrite(l1i); err != nil {
				return err
			}
		}
		idx0 := int(c0 & (1<<q.l2Bits - 1))
		for c := c0; c < cEnd; {
			i := idx0 + int(c-c0)
			if l2Entry(t.entries[i]).hostOffset() != 0 || l2Entry(t.entries[i]).compressed() {
				c++
				continue
			}
			k := int64(1)
			for c+k < cEnd && t.entries[i+int(k)] == 0 {
				k++
			}
			host, err := q.allocData(c, k)
			if err != nil {
				return err
			}
			if err := q.zeroReused(host, k*cs); err != nil {
				return err
			}
			if head != nil && c == from>>q.clusterBits {
				if err := q.writeData(head, host+from&(cs-1)-int64(len(head)), from-int64(len(head)), true); err != nil {
					return err
				}
			}
			runEnd := host + k*cs
			if c+k-1 == lastCluster {
				// qemu's file ends at the last unit of the new area
				lastHost := host + (k-1)*cs
				if err := q.copyTail(l2Entry(t.entries[i+int(k)-1]), to, lastHost+to&(cs-1)); err != nil {
					return err
				}
				runEnd = lastHost + roundUpTo(to-lastCluster*cs, q.preallocUnit())
			}
			for j := int64(0); j < k; j++ {
				t.entries[i+int(j)] = uint64(host+j*cs) | oflagCopied
			}
			hostEnd = max(hostEnd, runEnd)
			c += k
		}
		if fresh {
			if err := q.writeMeta(t.encode(q.extendedL2), t.offset); err != nil {
				return err
			}
			if err := q.setL1(l1i, uint64(t.offset)|oflagCopied); err != nil {
				return err
			}
			q.l2cache.put(t.offset, t)
			q.addMeta(t.offset, "active L2 table")
		} else if err := q.writeL2(t, idx0, idx0+int(cEnd-c0)); err != nil {
			return err
		}
		off = end
	}
	if hostEnd < 0 {
		return nil
	}
	data := q.dataNode()
	if hostEnd <= data.Size() {
		return nil
	}
	if mode == image.PreallocMetadata {
		mode = image.PreallocOff
	}
	return data.Truncate(hostEnd, mode)
}

// preallocateFile preallocates [from, to) in the image file itself as
// qemu does for falloc and full: refcount structures sized for all the new
// clusters are placed after the last used cluster, the data clusters
// follow them in one run (allocated on the file system as asked), and the
// L2 tables are allocated last, wherever there is room. The cluster
// that straddles from gets a new host cluster too, with its old part
// copied. allocated says whether extended L2 entries mark the new
// subclusters allocated, so that they read the zeroes of the file rather
// than the backing file.
func (q *Image) preallocateFile(from, to int64, mode image.Prealloc, allocated bool) error {
	cs := q.clusterSize
	r := q.rc
	head, err := q.straddlingHead(from, cs)
	if err != nil {
		return err
	}
	fileClusters := (q.file.Size() + cs - 1) >> q.clusterBits
	last, err := r.lastUsed(fileClusters)
	if err != nil {
		return err
	}
	oldEnd := (last + 1) * cs
	nData := ((to+cs-1)&^(cs-1) - from&^(cs-1)) >> q.clusterBits
	if nData <= 0 {
		return nil
	}
	perTable := int64(1) << q.l2Bits
	nL2 := (nData+perTable-1)/perTable + 1
	start, err := r.area(oldEnd, nData+nL2, true, 0, 0)
	if err != nil {
		return image.IOError("Failed to resize refcount structures", err)
	}
	if err := q.zeroReused(start, nData*cs); err != nil {
		return err
	}
	if err := q.file.Truncate(start+nData*cs, mode); err != nil {
		return image.Errorf(err, "Failed to resize underlying file: %v", err)
	}
	// counted once the file holds them: a file system too full for them
	// leaves no leak, as qemu's order leaves none
	if err := r.update(start>>q.clusterBits, nData, 1); err != nil {
		return err
	}
	if head != nil {
		if err := q.writeData(head, start, from-int64(len(head)), true); err != nil {
			return err
		}
	}
	host := start
	l2Span := cs << q.l2Bits
	for off := from &^ (cs - 1); off < to; {
		l1i := off / l2Span
		end := min(to, (l1i+1)*l2Span)
		t, err := q.l2ForWrite(l1i)
		if err != nil {
			return err
		}
		c0 := off >> q.clusterBits
		cEnd := (end + cs - 1) >> q.clusterBits
		idx0 := int(c0 & (perTable - 1))
		var old []l2Entry
		for c := c0; c < cEnd; c++ {
			i := idx0 + int(c-c0)
			old = append(old, l2Entry(t.entries[i]))
			// with extended L2 entries qemu leaves the subclusters
			// unallocated unless the backing file would show through
			t.entries[i] = uint64(host) | oflagCopied
			if q.extendedL2 && allocated {
				t.bitmaps[i] = uint64(^uint32(0))
			}
			host += cs
		}
		if err := q.writeL2(t, idx0, idx0+int(cEnd-c0)); err != nil {
			return err
		}
		for _, e := range old {
			if err := q.releaseEntry(e); err != nil {
				return err
			}
		}
		off = end
	}
	return nil
}
