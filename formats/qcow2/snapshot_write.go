package qcow2

import (
	"errors"
	"slices"
	"strconv"
	"syscall"
	"time"

	"qimg/image"
)

// Internal snapshots, created and deleted (qemu's qcow2_snapshot_create
// and qcow2_snapshot_delete). Both run with the image to themselves (the
// snapshot command holds it for writing) and order their writes so that a
// crash leaves leaked clusters or missing COPIED flags at worst, never a
// COPIED flag on a shared cluster (through which a write would change a
// snapshot):
//
//   - create: clear the COPIED flags of the active tables (the clusters
//     are about to be shared), add one reference to every table and
//     cluster the active L1 reaches, copy the L1 table, write the new
//     snapshot table; the header switch to that table is the commit
//     point;
//   - delete: the header switch to a table without the snapshot comes
//     first, then its references are dropped and the COPIED flags of what
//     the active image alone owns again are set.

// CreateSnapshot records the current guest view as snapshot name.
func (q *Image) CreateSnapshot(name string) error {
	q.meta.Lock()
	defer q.meta.Unlock()
	snaps, err := q.writableSnapshots()
	if err == errSnapshotDataFile {
		return image.Errorf(err, "Could not create snapshot '%s': -95 (Operation not supported)", name)
	}
	if err != nil {
		return err
	}
	// as in qemu, names need not be unique: ids are
	if len(snaps) >= maxSnapshots {
		return image.Errorf(nil, "Could not create snapshot '%s': -27 (File too large)", name)
	}
	if err := q.flushMetaLocked(); err != nil {
		return snapshotIOError("create", name, err)
	}
	// what gains a reference, checked before anything is written
	clusters, err := q.referencedClusters(q.l1)
	var errno syscall.Errno
	if errors.As(err, &errno) { // a table that could not be read
		return snapshotIOError("create", name, err)
	}
	if err != nil {
		return image.Errorf(err, "Could not create snapshot '%s': -27 (File too large)", name)
	}
	// a refcount that would overflow (refcount_bits=1 has room for no
	// snapshot) refuses before anything is written; qemu-img's words
	if err := q.referencesFit(clusters); err != nil {
		return image.Errorf(err, "Could not create snapshot '%s': -22 (Invalid argument)", name)
	}
	// the copy of the L1 table first, as qemu writes it (COPIED flags
	// and all): a failure there leaves nothing else changed
	l1Off, err := q.copyL1()
	if err != nil {
		return snapshotIOError("create", name, err)
	}
	if err := q.shareActive(clusters); err != nil {
		q.dropL1Copy(l1Off)
		return snapshotIOError("create", name, err)
	}
	now := time.Now()
	id := 1
	for _, s := range snaps {
		if n, err := strconv.Atoi(s.id); err == nil && n >= id {
			id = n + 1
		}
	}
	oldSize := snapshotTableBytes(snaps)
	snaps = append(snaps, snapshot{l1TableOffset: uint64(l1Off), l1Size: uint32(len(q.l1)),
		id: strconv.Itoa(id), name: cut(name, maxSnapshotInfoName), dateSec: uint32(now.Unix()), dateNsec: uint32(now.Nanosecond()),
		diskSize: uint64(q.size)})
	if err := q.commitSnapshotTable(snaps, oldSize); err != nil {
		return snapshotIOError("create", name, err)
	}
	return nil
}

// shareActive adds one reference to the clusters the active L1 reaches
// and clears their COPIED flags. The flags go first and reach the disk
// before any refcount rises: a crash in between leaves flags missing on
// clusters the active image alone uses (a write then copies them), never
// a flag on a shared cluster (a write would change the snapshot). A
// failed write is undone as far as the file still takes writes.
func (q *Image) shareActive(clusters []int64) error {
	// the copy of the L1 table is on disk first; qemu flushes the image
	// here (with its events): a flush that fails leaves nothing changed
	q.event(image.EvFlushToOS)
	q.event(image.EvFlushToDisk)
	if err := q.syncFiles(); err != nil {
		return err
	}
	if err := q.rc.flushPending(); err != nil { // the copy's refcount
		return err
	}
	err := q.setCopiedFlags(func(int64) (bool, error) { return false, nil })
	if err == nil {
		err = q.syncFiles()
	}
	if err == nil {
		err = q.addReferences(clusters, 1)
		if err == nil {
			if err = q.syncFiles(); err != nil {
				_ = q.addReferences(clusters, -1)
			}
		}
	}
	if err != nil {
		q.restoreCopiedFlags()
	}
	return err
}

// restoreCopiedFlags sets the COPIED flags by the refcounts again after
// a failed snapshot creation, as far as the file still takes writes.
func (q *Image) restoreCopiedFlags() {
	_ = q.setCopiedFlags(func(off int64) (bool, error) {
		v, err := q.rc.get(off >> q.clusterBits)
		return v == 1, err
	})
	_ = q.syncFiles()
}

// snapshotIOError words a failed snapshot operation as qemu-img does:
// "Could not create snapshot 's1': -28 (No space left on device)".
func snapshotIOError(op, name string, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return image.Errorf(err, "Could not %s snapshot '%s': %v", op, name, err)
	}
	return image.Errorf(err, "Could not %s snapshot '%s': -%d (%s)", op, name, int(errno), image.Strerror(errno))
}

// copyL1 writes a copy of the active L1 table into new clusters and
// returns its offset. An empty table (an image of size 0) takes no
// cluster and has offset 0, as in qemu.
func (q *Image) copyL1() (int64, error) {
	if len(q.l1) == 0 {
		return 0, nil
	}
	l1Bytes := int64(len(q.l1)) * 8
	// its refcount goes out once the copy is on disk (shareActive)
	off, err := q.rc.allocDeferred((l1Bytes + q.clusterSize - 1) >> q.clusterBits)
	if err != nil {
		return 0, err
	}
	if err := q.writeMeta(encodeL1(q.l1), off); err != nil {
		q.dropL1Copy(off)
		return 0, err
	}
	return off, nil
}

// dropL1Copy gives back the clusters of an L1 copy no snapshot names, as
// far as the file still takes writes (leaked otherwise).
func (q *Image) dropL1Copy(off int64) {
	if off != 0 {
		n := (int64(len(q.l1))*8 + q.clusterSize - 1) >> q.clusterBits
		_ = q.rc.freeDeferred(off>>q.clusterBits, n)
	}
}

// DeleteSnapshot removes the first snapshot named name: qemu-img's -d
// matches names only, never ids.
func (q *Image) DeleteSnapshot(name string) error {
	q.meta.Lock()
	defer q.meta.Unlock()
	// qemu-img finds it in the listed table, where names are cut
	snaps, err := q.readSnapshots()
	if err != nil {
		return err
	}
	listed := snapshotKeys(snaps)
	for k := range listed {
		listed[k].Name = cut(listed[k].Name, maxSnapshotInfoName)
	}
	i := image.SnapshotByName(name).Index(listed)
	if i < 0 {
		return image.Errorf(nil, "Could not delete snapshot '%s': snapshot not found", name)
	}
	if err := q.snapshotWritable(); err != nil {
		return image.Errorf(err, "Could not delete snapshot '%s': %v", name, err)
	}
	gone := snaps[i]
	if err := q.flushMetaLocked(); err != nil {
		return err
	}
	l1, err := q.readSnapshotL1(gone)
	if err != nil {
		return image.Errorf(err, "Could not delete snapshot '%s': %v", name, err)
	}
	oldSize := snapshotTableBytes(snaps)
	if err := q.commitSnapshotTable(slices.Delete(snaps, i, i+1), oldSize); err != nil {
		return deleteFailed(name, "Failed to remove snapshot from snapshot list", err)
	}
	if err := q.updateReferences(l1, -1); err != nil {
		return deleteFailed(name, "Failed to free the cluster and L1 table", err)
	}
	if gone.l1Size > 0 {
		if err := q.rc.release(int64(gone.l1TableOffset), int64(gone.l1Size)*8); err != nil {
			return deleteFailed(name, "Failed to free the cluster and L1 table", err)
		}
	}
	if err := q.syncCopiedFlags(); err != nil {
		return deleteFailed(name, "Failed to update snapshot status in disk", err)
	}
	return nil
}

// deleteFailed words a failure of snapshot -d as qemu-img does: the step
// of qemu's qcow2_snapshot_delete that failed, and the errno.
func deleteFailed(name, step string, err error) error {
	return image.Errorf(err, "Could not delete snapshot '%s': %s: %s", name, step, image.Strerror(err))
}

// writableSnapshots reads the snapshot table of an image whose snapshots
// may change.
func (q *Image) writableSnapshots() ([]snapshot, error) {
	if err := q.snapshotWritable(); err != nil {
		return nil, err
	}
	return q.readSnapshots()
}

// findSnapshot reads the table of a writable image and finds the snapshot
// sp selects (-1 when none is).
func (q *Image) findSnapshot(sp image.SnapshotSpec) ([]snapshot, int, error) {
	snaps, err := q.writableSnapshots()
	if err != nil {
		return nil, 0, err
	}
	return snaps, sp.Index(snapshotKeys(snaps)), nil
}

// dropReferences removes the references of a view (an L1 table) no
// longer in use, then sets the COPIED flags of what only the active image
// refers to again.
func (q *Image) dropReferences(l1 []uint64) error {
	if err := q.updateReferences(l1, -1); err != nil {
		return err
	}
	return q.syncCopiedFlags()
}

// syncCopiedFlags syncs the refcounts, then sets the COPIED flags of
// what only the active image refers to.
func (q *Image) syncCopiedFlags() error {
	if err := q.syncFiles(); err != nil {
		return err
	}
	if err := q.setCopiedFlags(func(off int64) (bool, error) {
		rc, err := q.rc.get(off >> q.clusterBits)
		return rc == 1, err
	}); err != nil {
		return err
	}
	if err := q.syncFiles(); err != nil {
		return err
	}
	return q.loadMetaClusters()
}

func (q *Image) snapshotWritable() error {
	if err := q.checkWritable(); err != nil {
		return err
	}
	if q.hasDataFile() {
		return errSnapshotDataFile
	}
	return nil
}

// errSnapshotDataFile: qemu has no internal snapshots with an external
// data file (ENOTSUP); each command words it as qemu-img does.
var errSnapshotDataFile = image.Errorf(image.ErrUnsupported, "Operation not supported")

func (q *Image) hasDataFile() bool { return q.data != nil || q.h.dataFile != "" }

// updateReferences adds delta to the refcount of every L2 table the L1
// entries reach and of every cluster those tables point at.
func (q *Image) updateReferences(l1 []uint64, delta int64) error {
	clusters, err := q.referencedClusters(l1)
	if err != nil {
		return err
	}
	return q.addReferences(clusters, delta)
}

// referencedClusters lists, sorted, the L2 tables the L1 entries reach and
// the clusters those tables point at (each cluster of a compressed
// cluster's bytes, as qemu counts them; repeats stay). It fails, before
// anything is written, on a cluster no refcount table qemu allows could
// cover (qemu: EFBIG).
func (q *Image) referencedClusters(l1 []uint64) ([]int64, error) {
	var clusters []int64
	for _, e := range l1 {
		l2off := l1Entry(e).l2Offset()
		if l2off == 0 {
			continue
		}
		clusters = append(clusters, l2off>>q.clusterBits)
		t, err := q.l2Table(l2off)
		if err != nil {
			return nil, err
		}
		for _, v := range t.entries {
			le := l2Entry(v)
			if le.compressed() {
				off, length := compressedDescriptor(le, q.clusterBits)
				for ci := off >> q.clusterBits; ci <= (off+length-1)>>q.clusterBits; ci++ {
					clusters = append(clusters, ci)
				}
				continue
			}
			if host := le.hostOffset(); host != 0 {
				clusters = append(clusters, host>>q.clusterBits)
			}
		}
	}
	slices.Sort(clusters)
	if n := len(clusters); n > 0 && clusters[n-1] >= maxRefcountTableBytes/8*q.rc.perBlock {
		return nil, image.Errorf(image.ErrCorrupt, "%s: cluster %#x lies beyond what a refcount table can cover: File too large",
			q.filename, clusters[n-1]<<q.clusterBits)
	}
	return clusters, nil
}

// referencesFit checks that each of the sorted clusters can take one
// more reference for each time it is listed (compressed clusters that
// share a host cluster repeat).
func (q *Image) referencesFit(clusters []int64) error {
	for i := 0; i < len(clusters); {
		j := i + 1
		for j < len(clusters) && clusters[j] == clusters[i] {
			j++
		}
		v, err := q.rc.get(clusters[i])
		if err != nil {
			return err
		}
		if v+uint64(j-i) > q.rc.max {
			return image.Errorf(image.ErrUnsupported, "%s: refcount of cluster %#x would overflow", q.filename, clusters[i]<<q.clusterBits)
		}
		i = j
	}
	return nil
}

// addReferences adds delta to the refcount of each of the sorted clusters
// (a repeated one gains delta for each time it is listed). Runs of
// consecutive clusters are updated together, one write per refcount
// block. On an error the runs done are reverted, as far as the file
// still takes writes.
func (q *Image) addReferences(clusters []int64, delta int64) error {
	done, err := q.addReferenceRuns(clusters, delta)
	if err != nil && done > 0 {
		_, _ = q.addReferenceRuns(clusters[:done], -delta)
	}
	return err
}

// addReferenceRuns is addReferences without the revert: it returns how
// many of the clusters it updated.
func (q *Image) addReferenceRuns(clusters []int64, delta int64) (int, error) {
	for i := 0; i < len(clusters); {
		// a run of distinct consecutive clusters; repeats (compressed
		// clusters sharing a host cluster) start a new run
		j := i + 1
		for j < len(clusters) && clusters[j] == clusters[j-1]+1 {
			j++
		}
		err := q.rc.update(clusters[i], int64(j-i), delta)
		for err == errAgain {
			// a refcount block was added for the run: the run again
			err = q.rc.update(clusters[i], int64(j-i), delta)
		}
		if err != nil {
			return i, image.Errorf(err, "%s: updating snapshot references: %s", q.filename, image.Strerror(err))
		}
		i = j
	}
	return len(clusters), nil
}

// setCopiedFlags sets the COPIED flag of every active L1 entry and of
// every non-compressed L2 entry with a host cluster where copied(host)
// says so and clears it elsewhere, then writes the tables that changed.
func (q *Image) setCopiedFlags(copied func(host int64) (bool, error)) error {
	for i, e := range q.l1 {
		l2off := l1Entry(e).l2Offset()
		if l2off == 0 {
			continue
		}
		t, err := q.l2Table(l2off)
		if err != nil {
			return err
		}
		changed := false
		for k, v := range t.entries {
			le := l2Entry(v)
			host := le.hostOffset()
			if le.compressed() || host == 0 {
				continue
			}
			c, err := copied(host)
			if err != nil {
				return err
			}
			nv := v &^ oflagCopied
			if c {
				nv |= oflagCopied
			}
			if nv != v {
				t.entries[k], changed = nv, true
			}
		}
		if changed {
			q.event(image.EvL2Update)
			if err := q.writeMeta(t.encode(q.extendedL2), l2off); err != nil {
				q.keepL2Dirty(t)
				return err
			}
		}
		c, err := copied(l2off)
		if err != nil {
			return err
		}
		ne := e &^ oflagCopied
		if c {
			ne |= oflagCopied
		}
		q.l1[i] = ne
	}
	if err := q.writeMeta(encodeL1(q.l1), int64(q.h.l1TableOffset)); err != nil {
		q.keepL1Dirty()
		return err
	}
	return nil
}

// keepL2Dirty leaves a table whose write failed to the next flush, which
// writes what memory holds (the flags match the refcounts on disk): a
// passing fault then leaves no flag wrong, as qemu's cache retries.
func (q *Image) keepL2Dirty(t *l2Table) {
	if q.dirtyL2 == nil {
		q.dirtyL2 = map[int64]*l2Table{}
	}
	t.dirtyLo, t.dirtyHi = 0, len(t.entries)
	q.dirtyL2[t.offset] = t
}

// keepL1Dirty leaves the whole L1 table, whose write failed, to the next
// flush.
func (q *Image) keepL1Dirty() {
	if q.dirtyL1 == nil {
		q.dirtyL1 = map[int64]struct{}{}
	}
	for i := range q.l1 {
		q.dirtyL1[int64(i)] = struct{}{}
	}
}

func encodeL1(l1 []uint64) []byte {
	buf := make([]byte, len(l1)*8)
	for i, v := range l1 {
		be.PutUint64(buf[i*8:], v)
	}
	return buf
}

// commitSnapshotTable writes snaps as a new snapshot table in new
// clusters, switches the header to it (the commit point) and frees the
// old table, oldSize bytes long.
func (q *Image) commitSnapshotTable(snaps []snapshot, oldSize int64) error {
	var buf []byte
	for _, s := range snaps {
		buf = appendSnapshotEntry(buf, s, uint32(len(s.extra)))
	}
	var off int64
	if len(buf) > 0 {
		var err error
		if off, err = q.rc.alloc((int64(len(buf)) + q.clusterSize - 1) >> q.clusterBits); err != nil {
			return err
		}
		if err := q.writeMeta(buf, off); err != nil {
			return err
		}
	}
	if err := q.syncFiles(); err != nil {
		return err
	}
	oldOff := int64(q.h.snapshotsOffset)
	var hdr [12]byte
	be.PutUint32(hdr[:], uint32(len(snaps)))
	be.PutUint64(hdr[4:], uint64(off))
	if err := q.writeMeta(hdr[:], offNbSnapshots); err != nil {
		return err
	}
	if err := q.syncFiles(); err != nil {
		return err
	}
	q.h.nbSnapshots, q.h.snapshotsOffset = uint32(len(snaps)), uint64(off)
	if oldSize > 0 && oldOff > 0 {
		if err := q.rc.release(oldOff, oldSize); err != nil {
			return err
		}
	}
	return q.loadMetaClusters()
}

// snapshotTableBytes is the size of a table holding snaps as read.
func snapshotTableBytes(snaps []snapshot) int64 {
	var n int64
	for _, s := range snaps {
		n += (snapHeaderSize + int64(len(s.extra)+len(s.id)+len(s.name)) + 7) &^ 7
	}
	return n
}

// ApplySnapshot makes the guest view that of the snapshot whose id, or
// else name, is name (qemu's qcow2_snapshot_goto), at the snapshot's
// size: the snapshot's tables and clusters gain the active image's
// reference, the active L1 table takes the snapshot's entries (the commit
// point), and what the old view alone used loses its reference. When the
// size changes or the L1 table must grow, the new L1 table goes to new
// clusters and one header write switches size and table together, so that
// a crash leaves either view whole.
func (q *Image) ApplySnapshot(name string) error {
	q.meta.Lock()
	defer q.meta.Unlock()
	// qemu refuses while any bitmap is loaded, enabled or not, and before
	// it looks for the snapshot
	bitmaps, err := q.loadBitmapDir()
	if err != nil {
		return err
	}
	if len(bitmaps) > 0 {
		return image.Errorf(nil, "Could not apply snapshot '%s': Device has active dirty bitmaps", name)
	}
	snaps, i, err := q.findSnapshot(image.SnapshotByIDOrName(name))
	if err == errSnapshotDataFile {
		return image.Errorf(err, "Could not apply snapshot '%s': Failed to load snapshot: %v", name, err)
	}
	if err != nil {
		return err
	}
	if i < 0 {
		return image.Errorf(nil, "Could not apply snapshot '%s': Failed to load snapshot: No such file or directory", name)
	}
	sn := snaps[i]
	if err := sn.checkL1(q.clusterSize); err != nil {
		return image.Errorf(err, "Could not apply snapshot '%s': Failed to load snapshot: %s", name, err.(*snapshotL1Error).errno)
	}
	size := int64(sn.diskSize)
	if err := q.checkSnapshotSize(name, size); err != nil {
		return err
	}
	if err := q.flushMetaLocked(); err != nil {
		return loadFailed(name, err)
	}
	snapL1, err := q.readSnapshotL1(sn)
	if err != nil {
		return loadFailed(name, err)
	}
	// the snapshot's clusters gain a reference: one that would overflow
	// refuses before anything is written, in qemu-img's words
	clusters, err := q.referencedClusters(snapL1)
	if err != nil {
		return loadFailed(name, err)
	}
	if err := q.referencesFit(clusters); err != nil {
		return image.Errorf(err, "Could not apply snapshot '%s': Failed to load snapshot: Invalid argument", name)
	}
	if err := q.switchToSnapshot(snapL1, clusters, size); err != nil {
		return loadFailed(name, err)
	}
	return nil
}

// loadFailed words a failure of snapshot -a past its checks as qemu-img
// does (its driver's errno under "Failed to load snapshot").
func loadFailed(name string, err error) error {
	return image.Errorf(err, "Could not apply snapshot '%s': Failed to load snapshot: %s", name, image.Strerror(err))
}

// switchToSnapshot makes the snapshot's table (referencing clusters) the
// active one at the snapshot's size, and drops the references of the
// table it replaces.
func (q *Image) switchToSnapshot(snapL1 []uint64, clusters []int64, size int64) error {
	if err := q.addReferences(clusters, 1); err != nil {
		return err
	}
	if err := q.syncFiles(); err != nil {
		return err
	}
	// qemu's table keeps its length unless the snapshot's size or table
	// needs more entries
	n := max(len(q.l1), len(snapL1), int(l1Entries(size, q.clusterBits, q.l2Bits)))
	l1 := make([]uint64, n)
	for k, e := range snapL1 {
		// shared with the snapshot: no COPIED flag yet
		l1[k] = e &^ oflagCopied
	}
	old := q.l1
	var err error
	if n == len(q.l1) && size == q.size {
		err = q.overwriteL1(l1)
	} else {
		err = q.switchL1(l1, size)
	}
	if err != nil {
		return err
	}
	return q.dropReferences(old)
}

// checkSnapshotSize refuses a snapshot size the image cannot take as
// qemu's qcow2_co_truncate, which snapshot -a runs first, refuses it:
// qemu-img then says which errno the truncate returned.
func (q *Image) checkSnapshotSize(name string, size int64) error {
	if size == q.size {
		return nil
	}
	errno := ""
	switch {
	case q.h.version < 3:
		errno = "Operation not supported" // "Can't resize a v2 image which has snapshots"
	case size%512 != 0 || size < 0:
		errno = "Invalid argument" // "The new size must be a multiple of 512"
	case size > 1<<62 || l1Entries(size, q.clusterBits, q.l2Bits)*8 > maxL1Bytes:
		errno = "File too large" // "Failed to grow the L1 table"
	default:
		return nil
	}
	return image.Errorf(nil, "Could not apply snapshot '%s': Failed to load snapshot: %s", name, errno)
}

// overwriteL1 writes l1, of the active table's length, over the active
// table in place.
func (q *Image) overwriteL1(l1 []uint64) error {
	if err := q.writeMeta(encodeL1(l1), int64(q.h.l1TableOffset)); err != nil {
		return err
	}
	if err := q.syncFiles(); err != nil {
		return err
	}
	q.l1 = l1
	return nil
}

// switchL1 writes l1 to new clusters, then switches the header's virtual
// size, L1 size and L1 offset in one write (they lie side by side), then
// frees the old table.
func (q *Image) switchL1(l1 []uint64, size int64) error {
	off, err := q.rc.alloc((int64(len(l1))*8 + q.clusterSize - 1) >> q.clusterBits)
	if err != nil {
		return err
	}
	if err := q.writeMeta(encodeL1(l1), off); err != nil {
		return err
	}
	if err := q.syncFiles(); err != nil {
		return err
	}
	var hdr [offL1TableOffset + 8 - offSize]byte
	be.PutUint64(hdr[0:], uint64(size))
	be.PutUint32(hdr[offCryptMethod-offSize:], q.h.cryptMethod)
	be.PutUint32(hdr[offL1Size-offSize:], uint32(len(l1)))
	be.PutUint64(hdr[offL1TableOffset-offSize:], uint64(off))
	if err := q.writeHeaderBytes(hdr[:], offSize); err != nil {
		return err
	}
	if err := q.syncFiles(); err != nil {
		return err
	}
	oldOff, oldLen := int64(q.h.l1TableOffset), int64(q.h.l1Size)
	q.h.size, q.h.l1Size, q.h.l1TableOffset = uint64(size), uint32(len(l1)), uint64(off)
	q.size, q.l1 = size, l1
	if oldLen == 0 {
		return nil
	}
	return q.rc.release(oldOff, oldLen*8)
}

// LoadSnapshot makes a read-only image show the snapshot sp selects
// instead of its current state. The image keeps its current size, as in
// qemu: past the snapshot's end it reads unallocated.
func (q *Image) LoadSnapshot(sp image.SnapshotSpec) error {
	if q.writable {
		return image.Errorf(image.ErrUnsupported, "a snapshot can be loaded only read-only")
	}
	snaps, err := q.readSnapshots()
	if err != nil {
		return err
	}
	i := sp.Index(snapshotKeys(snaps))
	if i < 0 {
		return image.Errorf(nil, "Can't find snapshot")
	}
	l1, err := q.readSnapshotL1(snaps[i])
	if err != nil {
		return err
	}
	q.meta.Lock()
	defer q.meta.Unlock()
	q.l1 = l1
	return nil
}
