package qcow2

import (
	"qimg/image"
)

// maxReadOffset is qemu's BDRV_MAX_LENGTH: INT64_MAX aligned down to
// 1 GiB; reads beyond it fail with EIO.
const maxReadOffset = uint64(1<<63 - 1<<30)

// storedRefs reads the refcounts stored on disk for a check, independently
// of the refcount cache of writable images: the refcount table as the
// header names it, the blocks read as qemu reads them (zeroes beyond the
// end of the file).
type storedRefs struct {
	q           *Image
	c           *checker   // reports corruption, nil outside a check
	fmt         *refcounts // refcount width: get1/set1 and max only
	tableOffset int64
	table       []uint64
	max         uint64
	// one block cached for lookups (check_copied.go walks in order)
	cacheIndex int64
	cacheBuf   []byte
	cacheOK    bool
	cacheErr   error
	// repairs held in the cached block, bytes [dirtyLo, dirtyHi), not
	// yet written (repair.go); writeErr is the first write of such
	// repairs that failed
	dirty            bool
	dirtyLo, dirtyHi int64
	writeErr         error
}

// loadStoredRefs reads the refcount table named by the header; the header
// check bounded its size by maxRefcountTableBytes and the file.
func loadStoredRefs(q *Image) (*storedRefs, error) {
	h := q.h
	bits := uint(h.refcountBits())
	f := &refcounts{q: q, bits: bits, blockBits: q.clusterBits + 3 - h.refcountOrder}
	f.perBlock = 1 << f.blockBits
	if bits == 64 {
		f.max = ^uint64(0)
	} else {
		f.max = 1<<bits - 1
	}
	s := &storedRefs{q: q, fmt: f, max: f.max, cacheIndex: -1}
	s.tableOffset = int64(h.refcountTableOffset)
	n := int64(h.refcountTableClusters) << q.clusterBits / 8
	raw := make([]byte, n*8)
	if err := q.file.ReadPadded(raw, s.tableOffset); err != nil {
		return nil, err
	}
	s.table = make([]uint64, n)
	for i := range s.table {
		s.table[i] = be.Uint64(raw[i*8:])
	}
	return s, nil
}

// readBlock reads refcount block ti into buf; it reports false when the
// table has no block there (all refcounts zero).
func (s *storedRefs) readBlock(ti int64, buf []byte) (bool, error) {
	if ti >= int64(len(s.table)) {
		return false, nil
	}
	uoff := s.table[ti] & refcountTableOffsetMask
	if uoff == 0 {
		return false, nil
	}
	if uoff&uint64(s.q.clusterSize-1) != 0 {
		if s.c != nil {
			s.c.signalCorruption("Refblock offset %s unaligned (reftable index: %s)", cHex(uoff), cHex(uint64(ti)))
		}
		return false, errIO
	}
	if uoff > maxReadOffset-uint64(len(buf)) {
		// beyond the largest offset qemu reads (BDRV_MAX_LENGTH)
		return false, errIO
	}
	if err := s.q.file.ReadPadded(buf, int64(uoff)); err != nil {
		return false, image.ErrnoError(err)
	}
	return true, nil
}

// get returns the stored refcount of cluster ci (qemu's
// qcow2_get_refcount).
func (s *storedRefs) get(ci int64) (uint64, error) {
	if _, err := s.load(ci >> s.fmt.blockBits); err != nil {
		return 0, err
	}
	return s.fmt.get1(s.cacheBuf, ci&(s.fmt.perBlock-1)), nil
}

// load makes refcount block ti the cached one, writing back the repairs
// of the block it replaces; it reports false when the table has no block
// there (all refcounts zero).
func (s *storedRefs) load(ti int64) (bool, error) {
	if ti != s.cacheIndex {
		s.writeBack()
		if s.cacheBuf == nil {
			s.cacheBuf = make([]byte, s.q.clusterSize)
		}
		ok, err := s.readBlock(ti, s.cacheBuf)
		if err == nil && !ok {
			clear(s.cacheBuf)
		}
		s.cacheIndex, s.cacheOK, s.cacheErr = ti, ok, err
	}
	return s.cacheOK, s.cacheErr
}

// invalidate forgets the cached block (after a repair wrote refcounts),
// writing back the repairs it holds first.
func (s *storedRefs) invalidate() {
	s.writeBack()
	s.cacheIndex = -1
}

// compare compares the stored refcounts with the counted ones (qemu's
// compare_refcounts), repairing what fix allows, and finds the highest
// cluster in use. The counted clusters are those of the file (and a last
// one referenced partly beyond its end); stored refcounts of clusters
// beyond are not looked at, as in qemu.
func (c *checker) compare(fix image.CheckFix) {
	s := c.stored
	f := s.fmt
	n := c.refs.len()
	per := f.perBlock
	c.highest = 0
	for ti := int64(0); ti*per < n; ti++ {
		// read into the cache, where repairs change it (as qemu reads
		// through its cache): a repair reads no block again
		_, err := s.load(ti)
		buf := s.cacheBuf
		lo := ti * per
		hi := min(lo+per, n)
		if err != nil {
			for ci := lo; ci < hi; ci++ {
				c.logf("Can't get refcount for cluster %d: %s", ci, image.Strerror(err))
				c.res.checkErrors++
			}
			continue
		}
		for ci := lo; ci < hi; ci++ {
			have := c.storedAt(buf, ci-lo)
			want := uint64(c.refs.c[ci])
			if want == 255 {
				want = c.refs.get(ci)
			}
			if have == 0 && want == 0 {
				continue
			}
			c.highest = ci
			if have != want {
				c.mismatch(ci, have, want, fix)
			}
			c.noteCopied(ci, have)
		}
	}
}

// storedAt decodes entry i of a refcount block, fast for 16 bits.
func (c *checker) storedAt(buf []byte, i int64) uint64 {
	if c.stored.fmt.bits == 16 {
		return uint64(be.Uint16(buf[i*2:]))
	}
	return c.stored.fmt.get1(buf, i)
}

// mismatch reports (and with fix repairs) one cluster whose stored
// refcount differs from its references.
func (c *checker) mismatch(ci int64, have, want uint64, fix image.CheckFix) {
	var fixed *int64
	switch {
	case have == 0:
		c.rebuild = true
	case have > want && fix&image.FixLeaks != 0:
		fixed = &c.res.leaksFixed
	case have < want && fix&image.FixErrors != 0:
		fixed = &c.res.corruptionsFixed
	}
	verb := "Leaked"
	switch {
	case fixed != nil:
		verb = "Repairing"
	case have < want:
		verb = "ERROR"
	}
	c.logf("%s cluster %d refcount=%d reference=%d", verb, ci, have, want)
	if fixed != nil {
		if err := c.setStored(ci, want); err == nil {
			if want == 0 {
				c.discard(ci)
			}
			(*fixed)++
			return
		}
	}
	if have < want {
		c.res.corruptions++
	} else {
		c.res.leaks++
	}
}
