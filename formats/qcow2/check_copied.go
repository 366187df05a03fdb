package qcow2

import (
	"qimg/image"
)

// The COPIED flag of an active L1 or L2 entry says that the cluster it
// points to has a refcount of exactly one (qemu's check_oflag_copied).
//
// Reading every L2 table a second time to compare each entry with its
// stored refcount is what makes qemu's check slow on large images; here
// the first walk records, per host cluster, whether active entries point
// to it with the flag set or clear, and the comparison of refcounts
// (check_stored.go) tells whether any of them disagrees with the stored
// refcount. Only then (or after a repair changed refcounts) are the L2
// tables read again, to report and fix each entry in qemu's order.

// noteCopied compares the recorded flags of cluster ci with its stored
// refcount.
func (c *checker) noteCopied(ci int64, stored uint64) {
	if ci >= int64(len(c.copiedSet))*64 {
		return
	}
	if stored == 1 {
		if c.copiedClear.has(ci) {
			c.copiedSlow = true
		}
	} else if c.copiedSet.has(ci) {
		c.copiedSlow = true
	}
}

// checkCopied checks (and repairs, when allowed) the COPIED flags of the
// active L1 table and of its L2 tables' entries against the stored
// refcounts, after the refcounts were repaired.
func (c *checker) checkCopied() error {
	q := c.q
	var repair bool
	switch {
	case c.fix&image.FixErrors != 0:
		repair = true
	case c.fix&image.FixLeaks != 0:
		// only when the refcounts are known to be right now
		repair = c.res.checkErrors == 0 && c.res.corruptions == 0 && c.res.leaks == 0
	}
	verb := "ERROR"
	if repair {
		verb = "Repairing"
	}
	// refcounts written by a repair: the records no longer apply
	slow := c.copiedSlow || c.res.leaksFixed != 0 || c.res.corruptionsFixed != 0
	s := c.stored
	s.invalidate()
	var table []byte
	var tableOff int64 = -1
	var used []int
	step := 8
	if q.extendedL2 {
		step = 16
	}
	for i, e := range q.l1 {
		l2off := l1Entry(e).l2Offset()
		if l2off == 0 {
			continue
		}
		v, err := s.get(l2off >> q.clusterBits)
		if err != nil {
			continue
		}
		if (v == 1) != (e&oflagCopied != 0) {
			c.res.corruptions++
			c.logf("%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", verb, i, e, v)
			if repair {
				ne := e &^ oflagCopied
				if v == 1 {
					ne |= oflagCopied
				}
				if err := c.writeL1Entry(i, ne); err != nil {
					c.res.checkErrors++
					return err
				}
				c.res.corruptions--
				c.res.corruptionsFixed++
			}
		}
		if !slow {
			continue
		}
		if table == nil {
			table = make([]byte, c.cs)
		}
		// consecutive entries naming one table: it is read and scanned
		// once (what a repair writes is written from this copy too)
		if l2off != tableOff {
			if err := c.readPadded(table, l2off); err != nil {
				c.logf("ERROR: Could not read L2 table: %s", image.Strerror(err))
				c.res.checkErrors++
				return err
			}
			tableOff = l2off
			used = c.usedL2Entries(table, used[:0])
		}
		dirty := 0
		for _, k := range used {
			j := k * step
			le := be.Uint64(table[j:])
			if !c.hostCluster(le) {
				continue
			}
			rc := uint64(1)
			if !q.cls.dataFile {
				if rc, err = s.get(int64(le&l2OffsetMask) >> q.clusterBits); err != nil {
					continue
				}
			}
			if (rc == 1) == (le&oflagCopied != 0) {
				continue
			}
			c.res.corruptions++
			c.logf("%s OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", verb, le, rc)
			if repair {
				le &^= oflagCopied
				if rc == 1 {
					le |= oflagCopied
				}
				be.PutUint64(table[j:], le)
				dirty++
			}
		}
		if dirty > 0 {
			if err := c.writeL2Table(table, l2off); err != nil {
				c.res.checkErrors++
				return err
			}
			c.res.corruptions -= int64(dirty)
			c.res.corruptionsFixed += int64(dirty)
		}
	}
	return nil
}

// hostCluster reports whether an L2 entry is a normal cluster or a zero
// cluster keeping its host cluster (qemu's QCOW2_CLUSTER_NORMAL and
// QCOW2_CLUSTER_ZERO_ALLOC).
func (c *checker) hostCluster(e uint64) bool {
	if e&oflagCompressed != 0 {
		return false
	}
	if e&oflagZero != 0 && !c.q.extendedL2 {
		return e&l2OffsetMask != 0
	}
	if e&l2OffsetMask == 0 {
		return c.q.cls.dataFile && e&oflagCopied != 0
	}
	return true
}
