package qcow2

import "qimg/image"

// MakeEmpty drops every cluster of the active image, so that it reads
// from its backing file everywhere (qemu's make_empty after a commit).
// Each L1 entry is cleared first and the L2 table and the clusters it
// pointed at are released only after the cleared entries are on disk
// (writeback.go), so a process killed at any point leaves leaks at worst.
// Snapshots keep their own references.
func (q *Image) MakeEmpty() error {
	q.meta.Lock()
	defer q.meta.Unlock()
	if err := q.checkWritable(); err != nil {
		return err
	}
	if q.data != nil && q.h.autoclear&autoclearDataFileRaw != 0 {
		return image.NotSupported("%s: emptying a qcow2 image with a raw external data file", q.filename)
	}
	q.event(image.EvEmptyImagePrepare)
	for i := range q.l1 {
		off := l1Entry(q.l1[i]).l2Offset()
		if off == 0 {
			continue
		}
		t, err := q.l2Table(off)
		if err != nil {
			return err
		}
		entries := append([]uint64(nil), t.entries...)
		// the entry goes before anything it pointed at is released
		if err := q.setL1(int64(i), 0); err != nil {
			return err
		}
		// neighbouring host clusters are released as one range: one
		// refcount write per block rather than one per cluster
		runOff, runLen := int64(0), int64(0)
		release := func() error {
			if runLen == 0 {
				return nil
			}
			err := q.releaseLater(runOff, runLen)
			runLen = 0
			return err
		}
		for _, v := range entries {
			e := l2Entry(v)
			h := e.hostOffset()
			if e.compressed() || q.data != nil || h == 0 {
				if err := release(); err != nil {
					return err
				}
				if err := q.releaseEntry(e); err != nil {
					return err
				}
				continue
			}
			if runLen > 0 && runOff+runLen == h {
				runLen += q.clusterSize
				continue
			}
			if err := release(); err != nil {
				return err
			}
			runOff, runLen = h, q.clusterSize
		}
		if err := release(); err != nil {
			return err
		}
		if err := q.releaseLater(off, q.clusterSize); err != nil {
			return err
		}
	}
	q.l2cache.clear()
	if err := q.flushMetaLocked(); err != nil {
		return err
	}
	return q.trimFreeSpace()
}

// trimFreeSpace gives back to the file system the clusters no longer in
// use, once their refcounts are on disk: the file ends after the last
// used cluster and free runs before it are discarded, so that an emptied
// image takes the room qemu's leaves (its header, tables and L1). Only
// space is at stake: a failure leaves it allocated.
func (q *Image) trimFreeSpace() error {
	if q.rc == nil {
		return nil
	}
	if err := q.barrier(); err != nil {
		return err
	}
	cs := q.clusterSize
	fileClusters := (q.file.Size() + cs - 1) >> q.clusterBits
	last, err := q.rc.lastUsed(fileClusters)
	if err != nil {
		return err
	}
	if end := (last + 1) * cs; end < q.file.Size() {
		_ = q.file.Truncate(end, image.PreallocOff)
	}
	for ci := int64(0); ci < last; {
		v, err := q.rc.get(ci)
		if err != nil {
			return err
		}
		if v != 0 {
			ci++
			continue
		}
		run := ci
		for ci < last {
			if v, err = q.rc.get(ci); err != nil || v != 0 {
				break
			}
			ci++
		}
		if err != nil {
			return err
		}
		_ = q.file.Discard(run*cs, (ci-run)*cs)
	}
	return nil
}
