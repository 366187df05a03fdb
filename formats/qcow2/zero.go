package qcow2

import "errors"

// errWholeCluster: the range cannot be zeroed by flags and is written.
var errWholeCluster = errors.New("qcow2: zero by writing")

// zeroChunk bounds the buffer of zeroes written where flags cannot be used.
const zeroChunk = 1 << 20

// zeroes is a cluster of zero bytes to write from, never written to: its
// pages stay the kernel's shared zero page.
var zeroes [1 << maxClusterBits]byte

// WriteZeroes makes [off, off+length) read as zeroes: whole clusters (and
// whole subclusters) get zero flags, keeping their host clusters unless
// unmap; partial ones are written. Version 2 images have no zero flag.
func (q *Image) WriteZeroes(off, length int64, unmap bool) error {
	q.markBitmapsDirty(off, length)
	cs := q.clusterSize
	for length > 0 {
		cStart := off &^ (cs - 1)
		if q.h.version >= 3 && off == cStart && length >= cs {
			l2Span := cs << q.l2Bits
			n := min(length&^(cs-1), (off/l2Span+1)*l2Span-off)
			q.meta.Lock()
			err := q.checkWritable()
			if err == nil {
				err = q.zeroClusters(off, n, unmap)
			}
			q.meta.Unlock()
			if err != nil {
				return err
			}
			off += n
			length -= n
			continue
		}
		n := min(length, cStart+cs-off)
		if q.h.version < 3 {
			n = min(length, zeroChunk)
		} else if q.extendedL2 {
			us := cs / subclusters
			if lo, hi := (off+us-1)&^(us-1), (off+n)&^(us-1); off == lo && hi > lo {
				n = hi - lo
				q.meta.Lock()
				err := q.checkWritable()
				if err == nil {
					err = q.zeroSubclusters(off, n)
				}
				q.meta.Unlock()
				if err != nil && err != errWholeCluster {
					return err
				}
				if err == nil {
					off += n
					length -= n
					continue
				}
			} else if hi > lo {
				n = lo - off // up to the first whole subcluster
			}
		}
		if _, err := q.WriteAt(zeroes[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// zeroClusters sets the zero flag of whole clusters [off, off+n) within
// one L2 table. The caller holds the metadata lock for writing.
func (q *Image) zeroClusters(off, n int64, unmap bool) error {
	cs := q.clusterSize
	q.waitInflight(off>>q.clusterBits, (off+n)>>q.clusterBits)
	l2Span := cs << q.l2Bits
	t, err := q.l2ForWrite(off / l2Span)
	if err != nil {
		return err
	}
	idx0 := int((off >> q.clusterBits) & (1<<q.l2Bits - 1))
	k := int(n >> q.clusterBits)
	old := make([]l2Entry, k)
	for i := 0; i < k; i++ {
		e := l2Entry(t.entries[idx0+i])
		old[i] = e
		keep := q.ownsHost(e) && (!unmap || q.data != nil)
		switch {
		case q.extendedL2 && keep:
			t.bitmaps[idx0+i] = uint64(^uint32(0)) << 32
			old[i] = 0
		case q.extendedL2:
			t.entries[idx0+i] = 0
			t.bitmaps[idx0+i] = uint64(^uint32(0)) << 32
		case keep:
			t.entries[idx0+i] = uint64(e) | oflagZero
			old[i] = 0
		default:
			t.entries[idx0+i] = oflagZero
		}
	}
	if q.data != nil && q.h.autoclear&autoclearDataFileRaw != 0 {
		// the data file must read as the guest disk
		if err := q.data.WriteZeroes(off, min(n, q.data.Size()-off), false); err != nil {
			return err
		}
	}
	if err := q.writeL2(t, idx0, idx0+k); err != nil {
		return err
	}
	for _, e := range old {
		if err := q.releaseEntry(e); err != nil {
			return err
		}
	}
	return nil
}

// zeroSubclusters sets the zero bits of whole subclusters [off, off+n)
// within one cluster (extended L2 entries). The caller holds the metadata
// lock for writing.
func (q *Image) zeroSubclusters(off, n int64) error {
	cs := q.clusterSize
	q.waitInflight(off>>q.clusterBits, off>>q.clusterBits+1)
	l2Span := cs << q.l2Bits
	t, err := q.l2ForWrite(off / l2Span)
	if err != nil {
		return err
	}
	idx := int((off >> q.clusterBits) & (1<<q.l2Bits - 1))
	e := l2Entry(t.entries[idx])
	cStart := off &^ (cs - 1)
	if e.compressed() {
		// compressed clusters have no subclusters: written as data
		return errWholeCluster
	}
	m := unitMask(off-cStart, off+n-cStart, cs)
	b := t.bitmaps[idx]
	t.bitmaps[idx] = (b>>32|uint64(m))<<32 | uint64(uint32(b)&^m)
	return q.writeL2(t, idx, idx+1)
}

// Discard drops whole clusters: they become unallocated (reading from the
// backing file, or zeroes) and their host clusters are freed. Parts of
// clusters are left as they are, which a discard allows.
func (q *Image) Discard(off, length int64) error {
	q.markBitmapsDirty(off, length)
	cs := q.clusterSize
	if q.data != nil && q.h.autoclear&autoclearDataFileRaw != 0 {
		return nil // the raw data file keeps the guest's data
	}
	start := (off + cs - 1) &^ (cs - 1)
	end := (off + length) &^ (cs - 1)
	if end >= q.Size() && off+length >= q.Size() {
		end = (q.Size() + cs - 1) &^ (cs - 1) // the last, partial cluster
	}
	l2Span := cs << q.l2Bits
	q.meta.Lock()
	defer q.meta.Unlock()
	if err := q.checkWritable(); err != nil {
		return err
	}
	for pos := start; pos < end; {
		n := min(end-pos, (pos/l2Span+1)*l2Span-pos)
		q.waitInflight(pos>>q.clusterBits, (pos+n)>>q.clusterBits)
		l1i := pos / l2Span
		if l1i >= int64(len(q.l1)) || l1Entry(q.l1[l1i]).l2Offset() == 0 {
			pos += n
			continue
		}
		t, err := q.l2ForWrite(l1i)
		if err != nil {
			return err
		}
		idx0 := int((pos >> q.clusterBits) & (1<<q.l2Bits - 1))
		k := int(n >> q.clusterBits)
		old := make([]l2Entry, k)
		for i := 0; i < k; i++ {
			old[i] = l2Entry(t.entries[idx0+i])
			t.entries[idx0+i] = 0
			if q.extendedL2 {
				t.bitmaps[idx0+i] = 0
			}
		}
		if err := q.writeL2(t, idx0, idx0+k); err != nil {
			return err
		}
		for _, e := range old {
			if err := q.releaseEntry(e); err != nil {
				return err
			}
		}
		pos += n
	}
	return nil
}
