package qcow2

// Metadata overlap check (qemu's qcow2_pre_write_overlap_check in its
// default mode): before guest data is written into the image file, the
// target range is compared with the header, the active L1 table, the
// refcount table, the snapshot table, and the clusters of active L2
// tables, refcount blocks and snapshot L1 tables. A write that would land
// on any of them is refused and the image marked corrupt.

// loadMetaClusters builds the set of metadata clusters of an image opened
// read/write.
func (q *Image) loadMetaClusters() error {
	q.metaClusters = map[int64]string{}
	// only offsets inside the file: the set stays proportional to the
	// file, whatever the tables say
	size := q.file.Size()
	for _, e := range q.l1 {
		if off := l1Entry(e).l2Offset(); off != 0 && off < size {
			q.addMeta(off, "active L2 table")
		}
	}
	for _, e := range q.rc.table {
		if off := int64(e & refcountTableOffsetMask); off != 0 && off < size {
			q.addMeta(off, "refcount block")
		}
	}
	snaps, err := q.readSnapshots()
	if err != nil {
		return err
	}
	for _, s := range snaps {
		for off := int64(s.l1TableOffset) &^ (q.clusterSize - 1); off < int64(s.l1TableOffset)+int64(s.l1Size)*8; off += q.clusterSize {
			q.addMeta(off, "inactive L1 table")
		}
	}
	if len(snaps) > 0 {
		end := int64(q.h.snapshotsOffset)
		for _, s := range snaps {
			end += (snapHeaderSize + int64(len(s.extra)+len(s.id)+len(s.name)) + 7) &^ 7
		}
		for off := int64(q.h.snapshotsOffset); off < end; off += q.clusterSize {
			q.addMeta(off, "snapshot table")
		}
	}
	return nil
}

// addMeta records a metadata cluster; the caller holds the metadata lock
// for writing (or is creating the image).
func (q *Image) addMeta(off int64, what string) {
	if q.metaClusters == nil {
		q.metaClusters = map[int64]string{}
	}
	q.metaClusters[off>>q.clusterBits] = what
}

// overlaps names the metadata structure that [off, off+n) of the image
// file would overwrite, "" if none. The caller holds the metadata lock.
func (q *Image) overlaps(off, n int64) string {
	cs := q.clusterSize
	in := func(start, length int64) bool {
		return length > 0 && off < start+length && start < off+n
	}
	h := q.h
	switch {
	case in(0, cs):
		return "qcow2_header"
	case in(int64(h.l1TableOffset), int64(h.l1Size)*8):
		return "active L1 table"
	case q.rc != nil && in(q.rc.tableOffset, q.rc.tableClusters*cs):
		return "refcount table"
	}
	for ci := off >> q.clusterBits; ci <= (off+n-1)>>q.clusterBits; ci++ {
		if what, ok := q.metaClusters[ci]; ok {
			return what
		}
	}
	return ""
}
