package qcow2

import (
	"errors"

	"qimg/image"
)

// Write order, in dependency order:
//
//  1. refcounts of new clusters (refcount blocks, refcount table): written
//     at once;
//  2. guest data and new tables into the new clusters: written at once;
//  3. the L2 entries pointing at the new clusters and the L1 entries
//     pointing at new L2 tables: kept in memory and written after a sync
//     (writeback.go);
//  4. refcounts of clusters no longer referenced: after another sync.
//
// A process killed, or a machine stopped, between any two steps leaves an
// image whose tables only point at clusters with a refcount: leaks at
// worst, never two owners of one cluster.

// openWritable prepares an image opened read/write: it loads the refcount
// table, repairs a dirty image and starts tracking writes in the enabled
// persistent bitmaps (bitmap_track.go).
func (q *Image) openWritable() error {
	h := q.h
	if err := h.tablesInFile(q.file.Size()); err != nil {
		return err
	}
	q.rc = newRefcounts(q)
	if err := q.rc.load(); err != nil {
		return image.IOError("Could not initialize refcount handling", err)
	}
	if h.incompatible&incompatDirty != 0 {
		if err := q.repairDirty(); err != nil {
			return err
		}
	}
	if err := q.loadMetaClusters(); err != nil {
		return err
	}
	if unknown := h.autoclear &^ autoclearKnown; unknown != 0 {
		// bits of features qimg does not maintain: clearing them tells
		// their users the data is no longer in sync
		h.autoclear &^= unknown
		if err := q.writeHeader(); err != nil {
			return err
		}
	}
	if h.autoclear&autoclearBitmaps != 0 && h.bitmaps != nil && h.bitmaps.nbBitmaps > 0 {
		return q.startBitmapTracking()
	}
	return nil
}

// writeMeta writes image metadata (never guest data) to the image file.
func (q *Image) writeMeta(p []byte, off int64) error {
	return q.file.WriteGrowing(p, off)
}

// writeHeaderBytes updates header fields in place; while an image is
// being created the header is written once at the end instead.
func (q *Image) writeHeaderBytes(p []byte, off int64) error {
	if q.creating {
		return nil
	}
	return q.writeMeta(p, off)
}

// writeHeader rewrites the whole first cluster from q.h.
func (q *Image) writeHeader() error {
	buf, err := q.h.encode()
	if err != nil {
		return err
	}
	if q.creating {
		return nil
	}
	full := make([]byte, q.clusterSize)
	copy(full, buf)
	return q.writeMeta(full, 0)
}

// markCorrupt sets the corrupt bit after a metadata inconsistency was
// found while writing; the image then refuses writes.
func (q *Image) markCorrupt() {
	if q.corrupt {
		return
	}
	q.corrupt = true
	if q.h.version >= 3 {
		q.h.incompatible |= incompatCorrupt
		var b [8]byte
		be.PutUint64(b[:], q.h.incompatible)
		_ = q.writeHeaderBytes(b[:], offIncompatibleFeatures)
		_ = q.file.Flush()
	}
}

func (q *Image) checkWritable() error {
	if q.corrupt {
		return image.Errorf(image.ErrCorrupt, "%s: image is marked corrupt; writes refused", q.filename)
	}
	if q.rc == nil {
		return image.ErrReadOnly
	}
	return nil
}

// WriteAt writes guest data. Writes into clusters the image owns alone go
// straight to the file; others allocate under the metadata lock.
func (q *Image) WriteAt(p []byte, off int64) (int, error) {
	q.markBitmapsDirty(off, int64(len(p)))
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		q.meta.RLock()
		err := q.checkWritable()
		var m mapping
		if err == nil {
			m, err = q.lookup(pos, int64(len(p)-done))
		}
		q.meta.RUnlock()
		if err != nil {
			return done, err
		}
		if m.typ == ctNormal && m.entry&oflagCopied != 0 {
			chunk := p[done : done+int(m.length)]
			if err := q.writeData(chunk, m.host, pos, false); err != nil {
				return done, err
			}
			done += len(chunk)
			continue
		}
		q.meta.Lock()
		n, err := q.allocWrite(p[done:], pos)
		q.meta.Unlock()
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// writeData writes guest data (at guest offset guest) at a host offset,
// refusing (and marking the image corrupt) when the range overlaps
// metadata. locked says whether the caller holds the metadata lock for
// writing.
func (q *Image) writeData(p []byte, host, guest int64, locked bool) error {
	q.dataNode().Event(image.EvWriteAIO)
	if q.crypt != nil {
		return q.writeEncrypted(p, host, guest, locked)
	}
	return q.writePlain(p, host, locked)
}

// writePlain is writeData for unencrypted images.
func (q *Image) writePlain(p []byte, host int64, locked bool) error {
	if q.data != nil {
		return q.data.WriteGrowing(p, host)
	}
	if !locked {
		q.meta.RLock()
	}
	what := q.overlaps(host, int64(len(p)))
	if !locked {
		q.meta.RUnlock()
	}
	if what != "" {
		if !locked {
			q.meta.Lock()
			defer q.meta.Unlock()
		}
		q.markCorrupt()
		return image.Errorf(image.ErrCorrupt, "%s: Preventing invalid write on metadata (overlaps with %s); image marked as corrupt", q.filename, what)
	}
	return q.file.WriteGrowing(p, host)
}

// readGuestLocked reads guest data while the caller holds the metadata
// lock for writing; bytes beyond the virtual size read as zeroes.
func (q *Image) readGuestLocked(p []byte, off int64) error {
	if off >= q.size {
		clear(p)
		return nil
	}
	if end := off + int64(len(p)); end > q.size {
		clear(p[q.size-off:])
		p = p[:q.size-off]
	}
	for done := 0; done < len(p); {
		m, err := q.lookup(off+int64(done), int64(len(p)-done))
		if err != nil {
			return err
		}
		buf := p[done : done+int(m.length)]
		if err := q.readRun(m, buf, off+int64(done)); err != nil {
			return err
		}
		done += len(buf)
	}
	return nil
}

// ownsHost reports whether an entry's host cluster belongs to the active
// image alone and can be written in place.
func (q *Image) ownsHost(e l2Entry) bool {
	return !e.compressed() && e&oflagCopied != 0 && (e.hostOffset() != 0 || q.data != nil)
}

// allocWrite writes a prefix of p at guest offset off that lies within
// one L2 table, allocating clusters as needed. It returns the bytes done.
// The caller holds the metadata lock for writing.
func (q *Image) allocWrite(p []byte, off int64) (int, error) {
	cs := q.clusterSize
	l2Span := cs << q.l2Bits
	end := min(off+int64(len(p)), (off/l2Span+1)*l2Span)
	c0 := off >> q.clusterBits
	cEnd := (end-1)>>q.clusterBits + 1
	if q.waitInflight(c0, cEnd) {
		return 0, nil // the lock was dropped: look again
	}
	t, err := q.l2ForWrite(off / l2Span)
	if err != nil {
		return 0, err
	}
	idx0 := int(c0 & (1<<q.l2Bits - 1))
	e0 := l2Entry(t.entries[idx0])
	if _, err := q.cls.classify(e0, t.bitmap(idx0), 0); err != nil {
		q.markCorrupt()
		return 0, q.corruptEntry(err, t.offset, idx0)
	}
	if q.ownsHost(e0) {
		m, err := q.walkL2(t, off, end-off)
		if err != nil {
			return 0, err
		}
		if m.typ == ctNormal {
			// allocated meanwhile: write in place, never read-modify-write
			// what a writer outside the lock may be writing
			return int(m.length), q.writeData(p[:m.length], m.host, off, true)
		}
		return q.writeOwned(t, idx0, p[:m.length], off)
	}
	k := int64(1)
	for c0+k < cEnd && !q.ownsHost(l2Entry(t.entries[idx0+int(k)])) {
		k++
	}
	wEnd := min(end, (c0+k)*cs)
	base := c0 * cs
	newBitmaps := make([]uint64, k)
	if off == base && wEnd == base+k*cs {
		// whole clusters: written from p as they are
		return int(wEnd - off), q.allocWriteWhole(t, idx0, p[:wEnd-off], c0, k, newBitmaps)
	}
	buf := make([]byte, k*cs)
	q.event(image.EvCOWRead)
	for i := int64(0); i < k; i++ {
		cStart := base + i*cs
		e := l2Entry(t.entries[idx0+int(i)])
		wLo, wHi := max(off, cStart), min(wEnd, cStart+cs)
		if !q.extendedL2 {
			// the whole cluster is written: the rest keeps what it reads
			if wLo > cStart {
				if err := q.readGuestLocked(buf[i*cs:wLo-base], cStart); err != nil {
					return 0, err
				}
			}
			if wHi < cStart+cs {
				if err := q.readGuestLocked(buf[wHi-base:(i+1)*cs], wHi); err != nil {
					return 0, err
				}
			}
			continue
		}
		old := t.bitmaps[idx0+int(i)]
		touched := unitMask(wLo-cStart, wHi-cStart, cs)
		alloc := uint32(old) | touched
		zero := uint32(old>>32) &^ touched
		if e.compressed() {
			alloc, zero = ^uint32(0), 0
		}
		newBitmaps[i] = uint64(zero)<<32 | uint64(alloc)
		if err := q.fillUnits(buf[i*cs:(i+1)*cs], cStart, alloc, wLo-cStart, wHi-cStart); err != nil {
			return 0, err
		}
	}
	copy(buf[off-base:], p[:wEnd-off])
	if err := q.allocWriteWhole(t, idx0, buf, c0, k, newBitmaps); err != nil {
		return 0, err
	}
	return int(wEnd - off), nil
}

// allocWriteWhole writes buf (k whole clusters from guest cluster c0, in
// L2 table t from index idx0) to newly allocated clusters, then points
// the entries at them; with extended L2 entries, bitmaps are the new
// subcluster bitmaps (all allocated when zero).
func (q *Image) allocWriteWhole(t *l2Table, idx0 int, buf []byte, c0, k int64, bitmaps []uint64) error {
	cs := q.clusterSize
	off := c0 * cs
	l2Span := cs << q.l2Bits
	for i := range bitmaps {
		if bitmaps[i] == 0 {
			bitmaps[i] = uint64(^uint32(0))
		}
	}
	host, err := q.allocDataDeferred(c0, k)
	if err != nil {
		return err
	}
	// the data goes out without the lock, so that writers of other
	// clusters proceed; writers of these clusters wait (inflight)
	ch := q.markInflight(c0, k)
	q.meta.Unlock()
	werr := q.writeAllocated(buf, host, off, bitmaps)
	q.meta.Lock()
	q.clearInflight(c0, k, ch)
	if werr != nil {
		// nothing points at the clusters yet: give them back, as qemu's
		// qcow2_alloc_cluster_abort does, so that a failed write leaks none
		if err := q.freeUnwritten(host, k); err != nil {
			return errors.Join(werr, err)
		}
		return werr
	}
	if t, err = q.l2ForWrite(off / l2Span); err != nil {
		return err
	}
	old := make([]l2Entry, k)
	for i := int64(0); i < k; i++ {
		j := idx0 + int(i)
		old[i] = l2Entry(t.entries[j])
		t.entries[j] = uint64(host+i*cs) | oflagCopied
		if q.extendedL2 {
			t.bitmaps[j] = bitmaps[i]
		}
	}
	if err := q.writeL2(t, idx0, idx0+int(k)); err != nil {
		return err
	}
	for _, e := range old {
		if err := q.releaseEntry(e); err != nil {
			return err
		}
	}
	return nil
}

// writeAllocated writes buf, new clusters at host for guest offset
// guest, without the metadata lock. With extended L2 entries only the allocated subclusters of their
// bitmaps are written: the others read from their bitmap, so their bytes
// in the file stay holes (qemu writes no more either).
func (q *Image) writeAllocated(buf []byte, host, guest int64, bitmaps []uint64) error {
	if !q.extendedL2 {
		return q.writeData(buf, host, guest, false)
	}
	us := q.clusterSize / subclusters
	lo := int64(-1)
	for i, b := range bitmaps {
		for u := int64(0); u < subclusters; u++ {
			pos := int64(i)*q.clusterSize + u*us
			switch on := b>>uint(u)&1 != 0; {
			case on && lo < 0:
				lo = pos
			case !on && lo >= 0:
				if err := q.writeData(buf[lo:pos], host+lo, guest+lo, false); err != nil {
					return err
				}
				lo = -1
			}
		}
	}
	if lo >= 0 {
		return q.writeData(buf[lo:], host+lo, guest+lo, false)
	}
	return nil
}

// writeOwned writes into one cluster the image owns (a preallocated zero
// cluster, or subclusters of an allocated cluster with extended L2), then
// updates its entry.
func (q *Image) writeOwned(t *l2Table, idx int, p []byte, off int64) (int, error) {
	cs := q.clusterSize
	cStart := off &^ (cs - 1)
	wEnd := min(off+int64(len(p)), cStart+cs)
	e := l2Entry(t.entries[idx])
	host := e.hostOffset()
	if !q.extendedL2 {
		buf := make([]byte, cs)
		if err := q.readGuestLocked(buf, cStart); err != nil {
			return 0, err
		}
		copy(buf[off-cStart:], p[:wEnd-off])
		if err := q.writeData(buf, host, cStart, true); err != nil {
			return 0, err
		}
		t.entries[idx] = uint64(e) &^ oflagZero
		return int(wEnd - off), q.writeL2(t, idx, idx+1)
	}
	us := cs / subclusters
	lo, hi := (off-cStart)/us*us, (wEnd-cStart+us-1)/us*us
	buf := make([]byte, hi-lo)
	if off-cStart > lo {
		if err := q.readGuestLocked(buf[:off-cStart-lo], cStart+lo); err != nil {
			return 0, err
		}
	}
	if wEnd-cStart < hi {
		if err := q.readGuestLocked(buf[wEnd-cStart-lo:], wEnd); err != nil {
			return 0, err
		}
	}
	copy(buf[off-cStart-lo:], p[:wEnd-off])
	if err := q.writeData(buf, host+lo, cStart+lo, true); err != nil {
		return 0, err
	}
	touched := unitMask(off-cStart, wEnd-cStart, cs)
	old := t.bitmaps[idx]
	t.bitmaps[idx] = uint64(uint32(old>>32)&^touched)<<32 | uint64(uint32(old)|touched)
	return int(wEnd - off), q.writeL2(t, idx, idx+1)
}

// unitMask is the subclusters touched by bytes [lo, hi) of a cluster.
func unitMask(lo, hi, cs int64) uint32 {
	us := cs / subclusters
	a, b := lo/us, (hi+us-1)/us
	var m uint32
	for i := a; i < b; i++ {
		m |= 1 << uint(i)
	}
	return m
}

// fillUnits fills, in a new cluster buffer, the parts of the allocated
// subclusters (alloc) that the write [wLo, wHi) does not cover with what
// the guest reads there now.
func (q *Image) fillUnits(buf []byte, cStart int64, alloc uint32, wLo, wHi int64) error {
	us := q.clusterSize / subclusters
	for u := int64(0); u < subclusters; u++ {
		if alloc>>uint(u)&1 == 0 {
			continue
		}
		a, b := u*us, (u+1)*us
		if a < wLo {
			if err := q.readGuestLocked(buf[a:min(b, wLo)], cStart+a); err != nil {
				return err
			}
		}
		if b > wHi {
			s := max(a, wHi)
			if err := q.readGuestLocked(buf[s:b], cStart+s); err != nil {
				return err
			}
		}
	}
	return nil
}

// allocData allocates k guest clusters' host clusters from guest cluster
// c0 on: refcounted clusters in the image file, or the fixed place of the
// guest clusters in an external data file.
func (q *Image) allocData(c0, k int64) (int64, error) {
	if q.data != nil {
		return c0 << q.clusterBits, nil
	}
	return q.rc.alloc(k)
}

// allocDataDeferred is allocData for clusters whose entries go through
// the write-back: their refcounts are written with the entries.
func (q *Image) allocDataDeferred(c0, k int64) (int64, error) {
	if q.data != nil {
		return c0 << q.clusterBits, nil
	}
	return q.rc.allocDeferred(k)
}

// freeUnwritten gives back k clusters at host that allocDataDeferred
// took for a write that failed: no entry points at them.
func (q *Image) freeUnwritten(host, k int64) error {
	if q.data != nil {
		return nil
	}
	return q.rc.freeDeferred(host>>q.clusterBits, k)
}

// releaseEntry drops the reference an L2 entry held, once the entry that
// replaced it is on disk (see writeback.go).
func (q *Image) releaseEntry(e l2Entry) error {
	if q.data != nil && !e.compressed() {
		return nil // data file clusters are not refcounted
	}
	if e.compressed() {
		off, length := compressedDescriptor(e, q.clusterBits)
		return q.releaseLater(off&^(compressedSectorSize-1), length+off%compressedSectorSize)
	}
	if h := e.hostOffset(); h != 0 {
		return q.releaseLater(h, q.clusterSize)
	}
	return nil
}

// bitmap is the subcluster bitmap of entry i, 0 for standard entries.
func (t *l2Table) bitmap(i int) uint64 {
	if t.bitmaps == nil {
		return 0
	}
	return t.bitmaps[i]
}

// writeL2 schedules entries [i, j) of an L2 table for writing (written
// at once while an image is being created).
func (q *Image) writeL2(t *l2Table, i, j int) error {
	if !q.creating {
		return q.markL2Dirty(t, i, j)
	}
	return q.writeL2Now(t, i, j)
}

// writeL2Now writes entries [i, j) of an L2 table.
func (q *Image) writeL2Now(t *l2Table, i, j int) error {
	q.event(image.EvL2Update)
	es := int(q.h.l2EntrySize())
	buf := make([]byte, (j-i)*es)
	for k := i; k < j; k++ {
		b := buf[(k-i)*es:]
		be.PutUint64(b, t.entries[k])
		if es == 16 {
			be.PutUint64(b[8:], t.bitmaps[k])
		}
	}
	return q.writeMeta(buf, t.offset+int64(i*es))
}

func (t *l2Table) encode(extended bool) []byte {
	es := 8
	if extended {
		es = 16
	}
	buf := make([]byte, len(t.entries)*es)
	for k := range t.entries {
		be.PutUint64(buf[k*es:], t.entries[k])
		if extended {
			be.PutUint64(buf[k*es+8:], t.bitmaps[k])
		}
	}
	return buf
}

// l2ForWrite returns the L2 table of L1 index l1i, owned by the active
// image alone: a new table if there is none, a copy if it is shared with
// a snapshot.
func (q *Image) l2ForWrite(l1i int64) (*l2Table, error) {
	if l1i >= int64(len(q.l1)) {
		return nil, image.Corrupt("%s: L1 index %d beyond the L1 table (%d entries)", q.filename, l1i, len(q.l1))
	}
	e := l1Entry(q.l1[l1i])
	old := e.l2Offset()
	if old != 0 && e&oflagCopied != 0 {
		return q.l2Table(old)
	}
	n := int(1) << q.l2Bits
	t := &l2Table{entries: make([]uint64, n)}
	if q.extendedL2 {
		t.bitmaps = make([]uint64, n)
	}
	if old != 0 {
		q.event(image.EvL2AllocCOWRead)
		src, err := q.l2Table(old)
		if err != nil {
			return nil, err
		}
		copy(t.entries, src.entries)
		copy(t.bitmaps, src.bitmaps)
	}
	// only the L1 entry, held back by the write-back, points at the new
	// table: its refcount goes out with that entry (allocDeferred), so a
	// write that fails before leaves nothing behind
	off, err := q.rc.allocDeferred(1)
	if err != nil {
		return nil, err
	}
	t.offset = off
	buf := zeroes[:q.clusterSize]
	if old != 0 {
		buf = t.encode(q.extendedL2)
	}
	q.event(image.EvL2AllocWrite)
	q.event(image.EvL2Update) // qemu writes the new table through its cache
	if err := q.writeMeta(buf, off); err != nil {
		if rerr := q.rc.freeDeferred(off>>q.clusterBits, 1); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		return nil, err
	}
	if err := q.setL1(l1i, uint64(off)|oflagCopied); err != nil {
		return nil, err
	}
	q.l2cache.put(off, t)
	q.addMeta(off, "active L2 table")
	if old != 0 {
		// the snapshot keeps its copy; this reference goes once the new
		// L1 entry is on disk
		if err := q.releaseLater(old, q.clusterSize); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (q *Image) setL1(i int64, v uint64) error {
	q.l1[i] = v
	// the point where qemu writes the entry; the write-back writes it later
	q.event(image.EvL1Update)
	if q.creating {
		return nil // the whole table is written before the header
	}
	return q.markL1Dirty(i)
}

// writeL1Now writes L1 entry i.
func (q *Image) writeL1Now(i int64) error {
	var b [8]byte
	be.PutUint64(b[:], q.l1[i])
	return q.writeMeta(b[:], int64(q.h.l1TableOffset)+i*8)
}
