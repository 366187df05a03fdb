package qcow2

import (
	"fmt"

	"qimg/image"
)

// Changing the compatibility level (qemu's qcow2_upgrade and
// qcow2_downgrade). Each ends with one header write, the commit point:
// what comes before it (a snapshot table in the version 3 layout, zero
// clusters turned into data or holes) is valid in both versions.

// upgrade turns a version 2 image into a version 3 one.
func (q *Image) upgrade(steps *amendProgress) error {
	q.meta.Lock()
	defer q.meta.Unlock()
	steps.status(0, 2)
	snaps, err := q.readSnapshots()
	if err != nil {
		return err
	}
	for _, s := range snaps {
		if len(s.extra) < 16 {
			// version 3 requires each snapshot's VM state size and disk
			// size: the table is written again with them
			if err := q.commitSnapshotTable(snaps, snapshotTableBytes(snaps)); err != nil {
				return fmt.Errorf("Failed to update the snapshot table: %w", err)
			}
			break
		}
	}
	steps.status(1, 2)
	nh := q.h.clone()
	nh.version = 3
	nh.headerLength = headerV3Length
	nh.refcountOrder = defaultRefcountOrder
	nh.compressionType, nh.tail = compressionZlib, nil
	nh.incompatible, nh.compatible, nh.autoclear = 0, 0, 0
	// a bitmaps extension left in a version 2 image (qemu's downgrade
	// leaves it) is stale: qemu drops it too
	nh.setExtension(extBitmaps, nil)
	nh.bitmaps = nil
	nh.insertFeatureTable()
	if err := q.switchHeader(nh); err != nil {
		return err
	}
	q.cls.version = 3
	steps.status(2, 2)
	return nil
}

// insertFeatureTable adds qemu's feature name table where qemu writes it:
// after the backing format, data file and crypto extensions, in first
// clusters of 8 KiB and more (qemu leaves it out of smaller ones).
func (h *header) insertFeatureTable() {
	h.setExtension(extFeatureTable, nil)
	if h.clusterSize() < 8192 {
		return
	}
	at := 0
	for i, e := range h.extensions {
		if e.typ == extBackingFormat || e.typ == extDataFile || e.typ == extCrypto {
			at = i + 1
		}
	}
	e := extension{typ: extFeatureTable, data: featureTable()}
	h.extensions = append(h.extensions[:at:at], append([]extension{e}, h.extensions[at:]...)...)
}

// checkDowngrade refuses a downgrade where qemu refuses it, with its
// words; order and size are the refcount order and the size the image
// will have when the downgrade comes.
func (q *Image) checkDowngrade(order uint32, size int64, steps *amendProgress) error {
	if order != defaultRefcountOrder {
		return image.Errorf(nil, "compat=0.10 requires refcount_bits=16")
	}
	if q.h.incompatible&incompatDataFile != 0 {
		return image.Errorf(nil, "Cannot downgrade an image with a data file")
	}
	q.meta.RLock()
	snaps, err := q.readSnapshots()
	q.meta.RUnlock()
	if err != nil {
		return err
	}
	for _, s := range snaps {
		if s.vmStateSize > 0xffffffff || s.diskSize != uint64(size) {
			return image.Errorf(nil, "Internal snapshots prevent downgrade of image")
		}
	}
	// the dirty bit goes with the repair done when the image was opened
	if f := q.h.incompatible &^ (incompatCompression | incompatDirty); f != 0 {
		return image.Errorf(nil, "Cannot downgrade an image with incompatible features 0x%x set", f)
	}
	if q.h.compressionType != compressionZlib {
		has, err := q.hasCompressedClusters()
		if err != nil {
			return image.Errorf(nil, "Failed to check block status")
		}
		if has {
			// qemu finds them after the zero expansion: its progress
			steps.begin(opDowngrade)
			total := l1EntriesTotal(q.l1, snaps)
			for i := range total {
				steps.status(i+1, total)
			}
			return image.Errorf(nil, "Cannot downgrade an image with zstd compression type and existing compressed clusters")
		}
	}
	return nil
}

// hasCompressedClusters reports whether the active view has a compressed
// cluster (qemu looks at the active view only).
func (q *Image) hasCompressedClusters() (bool, error) {
	q.meta.RLock()
	defer q.meta.RUnlock()
	seen := map[int64]bool{}
	for _, e := range q.l1 {
		l2off := l1Entry(e).l2Offset()
		if l2off == 0 || seen[l2off] {
			continue
		}
		seen[l2off] = true
		t, err := q.l2Table(l2off)
		if err != nil {
			return false, err
		}
		for _, v := range t.entries {
			if l2Entry(v).compressed() {
				return true, nil
			}
		}
	}
	return false, nil
}

// downgrade turns a version 3 image into a version 2 one; checkDowngrade
// has accepted it. Persistent bitmaps, which version 2 cannot keep, are
// removed with their clusters (qemu leaves them behind as leaks).
func (q *Image) downgrade(steps *amendProgress) error {
	if q.h.bitmaps != nil {
		if err := q.StoreBitmaps(nil); err != nil {
			return err
		}
	}
	q.meta.Lock()
	defer q.meta.Unlock()
	if err := q.flushMetaLocked(); err != nil {
		return err
	}
	if err := q.expandZeroClusters(steps); err != nil {
		return fmt.Errorf("Failed to turn zero into data clusters: %w", err)
	}
	nh := q.h.clone()
	nh.version = 2
	nh.headerLength = headerV2Length
	nh.compressionType, nh.tail = compressionZlib, nil
	nh.incompatible, nh.compatible, nh.autoclear = 0, 0, 0
	nh.setExtension(extFeatureTable, nil)
	nh.features = nil
	if err := q.switchHeader(nh); err != nil {
		return err
	}
	q.cls.version = 2
	return nil
}

// expandZeroClusters removes the zero flags that version 2 does not know
// (qemu's qcow2_expand_zero_clusters), in the active view and in every
// snapshot: a zero cluster without a host cluster becomes unallocated
// when no backing file could show through, else a new cluster of zeroes;
// one with a host cluster keeps it, filled with zeroes. The zeroes and
// refcounts are durable before an L2 table points at them.
func (q *Image) expandZeroClusters(steps *amendProgress) error {
	snaps, err := q.readSnapshots()
	if err != nil {
		return err
	}
	total := l1EntriesTotal(q.l1, snaps)
	visited := int64(0)
	// a table met again (shared with a snapshot, or named by a hostile
	// L1 many times) has no zero cluster left: the work stays
	// proportional to the file
	expanded := map[int64]bool{}
	expand := func(l1 []uint64) error {
		for _, e := range l1 {
			if l2off := l1Entry(e).l2Offset(); l2off != 0 && !expanded[l2off] {
				if err := q.expandZeroesInL2(l2off); err != nil {
					return err
				}
				expanded[l2off] = true
			}
			visited++
			steps.status(visited, total)
		}
		return nil
	}
	if err := expand(q.l1); err != nil {
		return err
	}
	for _, s := range snaps {
		if uint64(s.l1Size)*8 > maxL1Bytes {
			return image.Corrupt("%s: snapshot L1 table too large", q.filename)
		}
		l1, err := q.readTable(int64(s.l1TableOffset), int(s.l1Size))
		if err != nil {
			return err
		}
		if err := expand(l1); err != nil {
			return err
		}
	}
	return nil
}

// l1EntriesTotal is the number of L1 entries of the active view and the
// snapshots: the work of a zero expansion.
func l1EntriesTotal(l1 []uint64, snaps []snapshot) int64 {
	total := int64(len(l1))
	for _, s := range snaps {
		total += int64(s.l1Size)
	}
	return total
}

// expandZeroesInL2 expands the zero clusters of one L2 table.
func (q *Image) expandZeroesInL2(l2off int64) error {
	if l2off&(q.clusterSize-1) != 0 {
		return image.Corrupt("%s: L2 table offset %#x unaligned", q.filename, l2off)
	}
	l2Refcount, err := q.rc.get(l2off >> q.clusterBits)
	if err != nil {
		return err
	}
	t, err := q.l2Table(l2off)
	if err != nil {
		return err
	}
	entries := append([]uint64(nil), t.entries...)
	changed := false
	for i, v := range entries {
		e := l2Entry(v)
		if e.compressed() || e&oflagZero == 0 {
			continue
		}
		host := e.hostOffset()
		if host == 0 && q.h.backingFile == "" {
			entries[i], changed = 0, true
			continue
		}
		if host == 0 {
			if host, err = q.rc.alloc(1); err != nil {
				return err
			}
			for n := uint64(1); n < l2Refcount; n++ {
				if err := q.rc.update(host>>q.clusterBits, 1, 1); err != nil {
					return err
				}
			}
		}
		if host&(q.clusterSize-1) != 0 {
			return image.Corrupt("%s: Cluster allocation offset %#x unaligned (L2 offset: %#x, L2 index: %#x)", q.filename, host, l2off, i)
		}
		if what := q.overlaps(host, q.clusterSize); what != "" {
			return image.Corrupt("%s: zero cluster at %#x overlaps the %s", q.filename, host, what)
		}
		if err := q.dataNode().WriteGrowing(zeroes[:q.clusterSize], host); err != nil {
			return err
		}
		// COPIED where this entry is the cluster's one reference
		n, err := q.rc.get(host >> q.clusterBits)
		if err != nil {
			return err
		}
		entries[i] = uint64(host)
		if n == 1 && l2Refcount == 1 {
			entries[i] |= oflagCopied
		}
		changed = true
	}
	if !changed {
		return nil
	}
	if err := q.syncFiles(); err != nil {
		return err
	}
	nt := *t
	nt.entries = entries
	if err := q.writeMeta(nt.encode(q.extendedL2), l2off); err != nil {
		return err
	}
	t.entries = entries
	return nil
}
