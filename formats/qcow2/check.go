package qcow2

import (
	"fmt"
	"io"

	"qimg/image"
)

// maxCheckClusters bounds the reference count array of a check: one
// 32-bit counter per host cluster of the file (1 GiB of counters).
const maxCheckClusters = 1 << 28

// refScan is the result of walking every structure that references host
// clusters: how often each cluster is referenced, and what was wrong.
type refScan struct {
	refs        []uint32
	corruptions int64
	allocated   int64
	fragmented  int64
	compressed  int64
	errors      []string
}

func (s *refScan) corrupt(format string, args ...any) {
	s.corruptions++
	s.errors = append(s.errors, fmt.Sprintf(format, args...))
}

// scanReferences counts the references to every cluster of the image
// file: header, L1 tables (active and snapshots), L2 tables, data and
// compressed clusters, the snapshot table, the refcount table and blocks.
// The caller holds the metadata lock.
func (q *Image) scanReferences() (*refScan, error) {
	cs := q.clusterSize
	n := (q.file.Size() + cs - 1) >> q.clusterBits
	if n > maxCheckClusters {
		return nil, image.NotSupported("%s: checking images of more than %d clusters", q.filename, int64(maxCheckClusters))
	}
	s := &refScan{refs: make([]uint32, n)}
	add := func(off, length int64) {
		if length <= 0 {
			return
		}
		first, last := off>>q.clusterBits, (off+length-1)>>q.clusterBits
		for ci := first; ci <= last; ci++ {
			if ci < 0 || ci >= n {
				s.corrupt("ERROR: reference to cluster %#x beyond the end of the image file", ci<<q.clusterBits)
				return
			}
			s.refs[ci]++
		}
	}
	add(0, cs)
	h := q.h
	add(int64(h.l1TableOffset), int64(h.l1Size)*8)
	if err := q.scanL1(s, add, q.l1, true); err != nil {
		return nil, err
	}
	snaps, err := q.readSnapshots()
	if err != nil {
		return nil, err
	}
	if len(snaps) > 0 {
		// the table's extent as read
		end := int64(h.snapshotsOffset)
		for _, sn := range snaps {
			end += (snapHeaderSize + int64(len(sn.extra)+len(sn.id)+len(sn.name)) + 7) &^ 7
		}
		add(int64(h.snapshotsOffset), end-int64(h.snapshotsOffset))
	}
	for _, sn := range snaps {
		if uint64(sn.l1Size)*8 > maxL1Bytes || sn.l1TableOffset%uint64(cs) != 0 ||
			sn.l1TableOffset+uint64(sn.l1Size)*8 > uint64(q.file.Size()) {
			s.corrupt("ERROR: snapshot %s has an invalid L1 table", sn.id)
			continue
		}
		add(int64(sn.l1TableOffset), int64(sn.l1Size)*8)
		l1, err := q.readTable(int64(sn.l1TableOffset), int(sn.l1Size))
		if err != nil {
			return nil, err
		}
		if err := q.scanL1(s, add, l1, false); err != nil {
			return nil, err
		}
	}
	r := q.rc
	add(r.tableOffset, r.tableClusters*cs)
	for i, e := range r.table {
		off := int64(e & refcountTableOffsetMask)
		if off == 0 {
			continue
		}
		if off&(cs-1) != 0 || off >= n*cs {
			s.corrupt("ERROR refcount block %d is not cluster aligned or lies outside the image; refcount table entry corrupted", i)
			continue
		}
		add(off, cs)
	}
	if b := h.bitmaps; b != nil && h.autoclear&autoclearBitmaps != 0 && b.nbBitmaps > 0 {
		return nil, image.NotSupported("%s: checking qcow2 images with persistent bitmaps", q.filename)
	}
	return s, nil
}

// scanL1 counts the L2 tables of an L1 table and the clusters they
// reference.
func (q *Image) scanL1(s *refScan, add func(off, length int64), l1 []uint64, active bool) error {
	cs := q.clusterSize
	for i, e := range l1 {
		l2off := l1Entry(e).l2Offset()
		if l2off == 0 {
			continue
		}
		if l2off&(cs-1) != 0 || l2off > q.file.Size()-cs {
			s.corrupt("ERROR: L2 table offset %#x of L1 entry %d invalid", l2off, i)
			continue
		}
		add(l2off, cs)
		t, err := q.l2Table(l2off)
		if err != nil {
			return err
		}
		var next int64 // contiguity is counted within one L2 table, as qemu does
		for j, w := range t.entries {
			ent := l2Entry(w)
			var bm uint64
			if q.extendedL2 {
				bm = t.bitmaps[j]
			}
			if ent.compressed() {
				if bm != 0 {
					s.corrupt("ERROR: compressed cluster %d of L2 table %#x has a subcluster bitmap", j, l2off)
				}
				off, length := compressedDescriptor(ent, q.clusterBits)
				add(off&^(compressedSectorSize-1), length+off%compressedSectorSize)
				if active {
					// compressed clusters count as fragmented, as in qemu
					s.allocated++
					s.compressed++
					s.fragmented++
				}
				continue
			}
			host := ent.hostOffset()
			if host == 0 && !(q.data != nil && ent&oflagCopied != 0) {
				continue
			}
			if host&(cs-1) != 0 || uint64(w)&l2ReservedMask != 0 {
				s.corrupt("ERROR offset=%x: Cluster is not properly aligned; L2 entry corrupted.", host)
				continue
			}
			if active {
				s.allocated++
				if next != 0 && host != next {
					s.fragmented++
				}
				next = host + cs
			}
			if q.data == nil {
				add(host, cs)
			}
		}
	}
	return nil
}

// Check compares the refcounts on disk with the references found: a
// refcount below its references is a corruption, one above a leak. With
// fix, both are repaired (refcounts set to the references found).
func (q *Image) Check(fix image.CheckFix, log io.Writer) (*image.CheckResult, error) {
	q.meta.Lock()
	defer q.meta.Unlock()
	rc := q.rc
	if rc == nil {
		rc = newRefcounts(q)
		if err := rc.load(); err != nil {
			return nil, err
		}
		q.rc = rc
		defer func() { q.rc = nil }()
	}
	s, err := q.scanReferences()
	if err != nil {
		return nil, err
	}
	res := &image.CheckResult{
		TotalClusters:      (q.size + q.clusterSize - 1) >> q.clusterBits,
		AllocatedClusters:  s.allocated,
		FragmentedClusters: s.fragmented,
		CompressedClusters: s.compressed,
	}
	for _, e := range s.errors {
		fmt.Fprintln(log, e)
	}
	res.Corruptions = s.corruptions
	var highest int64 = -1
	for ci := range s.refs {
		have, err := rc.get(int64(ci))
		if err != nil {
			return nil, err
		}
		want := uint64(s.refs[ci])
		if have > 0 || want > 0 {
			highest = int64(ci)
		}
		switch {
		case have == want:
			continue
		case have > want:
			res.Leaks++
			fmt.Fprintf(log, "Leaked cluster %d refcount=%d reference=%d\n", ci, have, want)
			if fix&image.FixLeaks == 0 {
				continue
			}
		default:
			res.Corruptions++
			fmt.Fprintf(log, "ERROR cluster %d refcount=%d reference=%d\n", ci, have, want)
			if fix&image.FixErrors == 0 {
				continue
			}
		}
		if err := q.setRefcount(int64(ci), want); err != nil {
			return nil, err
		}
		if have > want {
			res.LeaksFixed++
		} else {
			res.CorruptionsFixed++
		}
	}
	res.ImageEndOffset = (highest + 1) << q.clusterBits
	if err := q.checkCopied(res, fix, log); err != nil {
		return nil, err
	}
	if fix != 0 && (res.LeaksFixed > 0 || res.CorruptionsFixed > 0) {
		if err := q.file.Flush(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// setRefcount writes one refcount, placing a missing refcount block at
// the end of the file (beyond every cluster in use, so that it cannot take
// a cluster whose refcount is still being repaired).
func (q *Image) setRefcount(ci int64, v uint64) error {
	r := q.rc
	if v > r.max {
		return image.Errorf(image.ErrUnsupported, "%s: cluster %d has %d references, more than refcount_bits allow", q.filename, ci, v)
	}
	for {
		b, err := r.block(ci >> r.blockBits)
		if err != nil {
			return err
		}
		if b != nil {
			i := ci & (r.perBlock - 1)
			r.set1(b.buf, i, v)
			return r.writeBlock(b, i, i+1)
		}
		if end := (q.file.Size() + q.clusterSize - 1) >> q.clusterBits; r.free < end {
			r.free = end
		}
		if err := r.allocBlock(ci); err != nil && err != errAgain {
			return err
		}
	}
}

// repairDirty rebuilds the refcounts of an image left dirty (lazy
// refcounts) and clears the dirty bit, as qemu does when it opens such an
// image read/write.
func (q *Image) repairDirty() error {
	res, err := q.Check(image.FixLeaks|image.FixErrors, io.Discard)
	if err != nil {
		return fmt.Errorf("%s: could not repair the refcounts of a dirty image: %w", q.filename, err)
	}
	if res.Corruptions > res.CorruptionsFixed {
		return image.Errorf(image.ErrCorrupt, "%s: could not repair the refcounts of a dirty image", q.filename)
	}
	q.meta.Lock()
	defer q.meta.Unlock()
	if err := q.file.Flush(); err != nil {
		return err
	}
	q.h.incompatible &^= incompatDirty
	var b [8]byte
	be.PutUint64(b[:], q.h.incompatible)
	if err := q.writeHeaderBytes(b[:], offIncompatibleFeatures); err != nil {
		return err
	}
	return q.file.Flush()
}

// checkCopied compares the COPIED flag of active L1 and L2 entries with
// the refcounts (exactly one reference: the flag must be set), after the
// refcounts were repaired; with FixErrors the flags are corrected.
func (q *Image) checkCopied(res *image.CheckResult, fix image.CheckFix, log io.Writer) error {
	verb := "ERROR"
	if fix&image.FixErrors != 0 {
		verb = "Repairing"
	}
	for i, e := range q.l1 {
		l2off := l1Entry(e).l2Offset()
		if l2off == 0 || l2off&(q.clusterSize-1) != 0 || l2off > q.file.Size()-q.clusterSize {
			continue
		}
		v, err := q.rc.get(l2off >> q.clusterBits)
		if err != nil {
			continue
		}
		if (v == 1) != (e&oflagCopied != 0) {
			res.Corruptions++
			fmt.Fprintf(log, "%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d\n", verb, i, e, v)
			if fix&image.FixErrors != 0 {
				if err := q.setL1(int64(i), e^oflagCopied); err != nil {
					return err
				}
				res.Corruptions--
				res.CorruptionsFixed++
			}
		}
		t, err := q.l2Table(l2off)
		if err != nil {
			continue
		}
		for j, w := range t.entries {
			ent := l2Entry(w)
			var bm uint64
			if q.extendedL2 {
				bm = t.bitmaps[j]
			}
			typ, err := q.cls.classify(ent, bm, 0)
			if err != nil || ent.compressed() || ent.hostOffset() == 0 && q.data == nil {
				continue
			}
			_ = typ
			v := uint64(1)
			if q.data == nil {
				if v, err = q.rc.get(ent.hostOffset() >> q.clusterBits); err != nil {
					continue
				}
			}
			if (v == 1) != (ent&oflagCopied != 0) {
				res.Corruptions++
				fmt.Fprintf(log, "%s OFLAG_COPIED data cluster: l2_entry=%x refcount=%d\n", verb, uint64(ent), v)
				if fix&image.FixErrors != 0 {
					t.entries[j] = w ^ oflagCopied
					if err := q.writeL2(t, j, j+1); err != nil {
						return err
					}
					res.Corruptions--
					res.CorruptionsFixed++
				}
			}
		}
	}
	return nil
}
