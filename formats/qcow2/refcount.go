package qcow2

import (
	"errors"
	"slices"

	"qimg/image"
)

// refcounts is the refcount table and its blocks ("== Host cluster
// management =="), used by writable images. Every change is written to
// the file at once (write-through), before the change that depends on it:
// a new cluster's refcount reaches the file before any table points at
// it, so a process killed at any moment leaves leaks at worst. The one
// exception, allocDeferred, is for clusters that only entries held back
// by the write-back (writeback.go) point at: their refcounts are written
// by flushMetaLocked, before the sync that precedes those entries.
//
// Allocation follows qemu's: first fit from a moving free-cluster index,
// a missing refcount block placed at the next free cluster (describing
// itself when it can), and the allocation retried after a block was
// placed (the block may have taken the space chosen). The same sequence of
// allocations therefore gives the same layout as qemu's.
type refcounts struct {
	q         *Image
	bits      uint   // refcount_bits
	blockBits uint32 // log2 of the refcounts per block
	perBlock  int64
	max       uint64

	table         []uint64
	tableOffset   int64
	tableClusters int64
	blocks        *lru[*refBlock]
	free          int64 // first cluster index that may be free
	// dirty holds blocks changed while an image is being created: they
	// are written once, before the header (see Image.creating).
	dirty map[int64]*refBlock
	// pending holds blocks with changes made by allocDeferred that are
	// not written yet (entries [lo, hi) of each), kept out of the cache's
	// eviction; deferring says changes are being made that way.
	pending   map[int64]*refBlock
	deferring bool
}

type refBlock struct {
	offset int64
	buf    []byte
	lo, hi int64 // entries changed and not written yet (lo >= hi: none)
}

// errAgain: a refcount block was placed; the allocation that needed it
// must search again (qemu's -EAGAIN).
var errAgain = errors.New("qcow2: refcount block allocated, retry")

func newRefcounts(q *Image) *refcounts {
	h := q.h
	bits := uint(h.refcountBits())
	r := &refcounts{
		q:         q,
		bits:      bits,
		blockBits: q.clusterBits + 3 - h.refcountOrder,
	}
	r.perBlock = 1 << r.blockBits
	r.max = refcountMax(bits)
	n := max(minRefcountBlocks, l2CacheTables(q.size, q.clusterBits, q.l2Bits)/refcountCacheRatio)
	r.blocks = newLRU[*refBlock](n)
	return r
}

// load reads the refcount table; the header check bounded its size.
func (r *refcounts) load() error {
	h := r.q.h
	r.tableOffset = int64(h.refcountTableOffset)
	r.tableClusters = int64(h.refcountTableClusters)
	r.q.event(image.EvReftableLoad)
	t, err := r.q.readTable(r.tableOffset, int(r.tableClusters*r.q.clusterSize/8))
	if err != nil {
		return err
	}
	r.table = t
	r.pending = nil // the blocks are read again from the file
	return nil
}

// refcountMax is the largest refcount of the given width.
func refcountMax(bits uint) uint64 {
	if bits == 64 {
		return ^uint64(0)
	}
	return 1<<bits - 1
}

func (r *refcounts) get1(buf []byte, i int64) uint64 {
	switch r.bits {
	case 1, 2, 4:
		per := int64(8 / r.bits)
		shift := uint(i%per) * r.bits
		return uint64(buf[i/per]>>shift) & r.max
	case 8:
		return uint64(buf[i])
	case 16:
		return uint64(be.Uint16(buf[i*2:]))
	case 32:
		return uint64(be.Uint32(buf[i*4:]))
	}
	return be.Uint64(buf[i*8:])
}

func (r *refcounts) set1(buf []byte, i int64, v uint64) {
	switch r.bits {
	case 1, 2, 4:
		per := int64(8 / r.bits)
		shift := uint(i%per) * r.bits
		b := &buf[i/per]
		*b = *b&^byte(r.max<<shift) | byte(v<<shift)
	case 8:
		buf[i] = byte(v)
	case 16:
		be.PutUint16(buf[i*2:], uint16(v))
	case 32:
		be.PutUint32(buf[i*4:], uint32(v))
	default:
		be.PutUint64(buf[i*8:], v)
	}
}

// byteRange is the bytes of a block holding entries [i, j).
func (r *refcounts) byteRange(i, j int64) (int64, int64) {
	lo := i * int64(r.bits) / 8
	hi := (j*int64(r.bits) + 7) / 8
	return lo, hi
}

// block returns refcount block ti, nil if it is not allocated.
func (r *refcounts) block(ti int64) (*refBlock, error) {
	if ti >= int64(len(r.table)) {
		return nil, nil
	}
	e := r.table[ti]
	off := int64(e & refcountTableOffsetMask)
	if off == 0 {
		return nil, nil
	}
	if b, ok := r.dirty[off]; ok {
		return b, nil
	}
	if b, ok := r.pending[off]; ok {
		return b, nil
	}
	return r.blocks.get(off, func() (*refBlock, error) {
		q := r.q
		if e&^refcountTableOffsetMask != 0 || off&(q.clusterSize-1) != 0 {
			return nil, image.Corrupt("%s: refcount table entry %d (%#x) is invalid", q.filename, ti, e)
		}
		if off > q.file.Size()-q.clusterSize {
			return nil, image.Corrupt("%s: refcount block %d at %#x lies beyond the end of the file", q.filename, ti, off)
		}
		b := &refBlock{offset: off, buf: make([]byte, q.clusterSize)}
		q.event(image.EvRefblockLoad)
		if _, err := q.file.ReadAt(b.buf, off); err != nil {
			return nil, err
		}
		return b, nil
	})
}

// get returns the refcount of cluster ci.
func (r *refcounts) get(ci int64) (uint64, error) {
	b, err := r.block(ci >> r.blockBits)
	if err != nil || b == nil {
		return 0, err
	}
	return r.get1(b.buf, ci&(r.perBlock-1)), nil
}

// maxClusters bounds cluster indexes: L2 entries hold offsets below 2^56.
func (r *refcounts) maxClusters() int64 { return maxHostOffset >> r.q.clusterBits }

// allocNoRef finds n free clusters in a row from the free index on
// (qemu's alloc_clusters_noref) without taking them.
func (r *refcounts) allocNoRef(n int64) (int64, error) {
	start := r.free
	for start+n <= r.maxClusters() {
		// check [start, start+n) block by block
		ci := start
		ok := true
		for ci < start+n {
			ti := ci >> r.blockBits
			blockEnd := (ti + 1) << r.blockBits
			end := min(start+n, blockEnd)
			b, err := r.block(ti)
			if err != nil {
				return 0, err
			}
			if b != nil {
				if i := r.firstUsed(b.buf, ci&(r.perBlock-1), end-ti<<r.blockBits); i >= 0 {
					ok = false
					ci = ti<<r.blockBits + i
				}
			}
			if !ok {
				break
			}
			ci = end
		}
		if ok {
			r.free = start + n
			return start, nil
		}
		start = ci + 1
	}
	return 0, image.Errorf(image.ErrUnsupported, "%s: no free space below the maximum host offset", r.q.filename)
}

// alloc allocates n contiguous clusters and returns the offset of the
// first, their refcounts (1) written.
func (r *refcounts) alloc(n int64) (int64, error) {
	r.q.event(image.EvClusterAlloc)
	for {
		ci, err := r.allocNoRef(n)
		if err != nil {
			return 0, err
		}
		err = r.update(ci, n, 1)
		if err == errAgain {
			continue
		}
		if err != nil {
			return 0, err
		}
		return ci << r.q.clusterBits, nil
	}
}

// allocDeferred is alloc for clusters that only entries written by the
// write-back will point at: the refcounts are written with those entries
// (flushPending), one write per block for many allocations.
func (r *refcounts) allocDeferred(n int64) (int64, error) {
	if r.q.creating {
		return r.alloc(n)
	}
	r.deferring = true
	defer func() { r.deferring = false }()
	return r.alloc(n)
}

// freeDeferred undoes allocDeferred for n clusters from cluster ci whose
// data write failed: their refcounts go back to 0 the same deferred way.
func (r *refcounts) freeDeferred(ci, n int64) error {
	if r.q.creating {
		return r.update(ci, n, -1)
	}
	r.deferring = true
	defer func() { r.deferring = false }()
	return r.update(ci, n, -1)
}

// flushPending writes the refcount changes allocDeferred made, in file
// order.
func (r *refcounts) flushPending() error {
	if len(r.pending) == 0 {
		return nil
	}
	offs := make([]int64, 0, len(r.pending))
	for off := range r.pending {
		offs = append(offs, off)
	}
	slices.Sort(offs)
	for _, off := range offs {
		b := r.pending[off]
		if b.lo < b.hi {
			blo, bhi := r.byteRange(b.lo, b.hi)
			r.q.event(image.EvRefblockUpdatePart)
			if err := r.q.writeMeta(b.buf[blo:bhi], b.offset+blo); err != nil {
				return err
			}
		}
		b.lo, b.hi = 0, 0
		delete(r.pending, off)
		r.blocks.put(off, b)
	}
	return nil
}

// free drops one reference to each cluster of [off, off+length).
func (r *refcounts) release(off, length int64) error {
	cs := r.q.clusterSize
	start := off >> r.q.clusterBits
	end := (off + length + cs - 1) >> r.q.clusterBits
	r.q.event(image.EvClusterFree)
	return r.update(start, end-start, -1)
}

// update adds delta (+1 or -1) to the refcounts of clusters [start,
// start+n), writing each block's changed bytes once. On an error the
// clusters done are reverted; errAgain tells the caller to search again.
func (r *refcounts) update(start, n, delta int64) error {
	for ci := start; ci < start+n; {
		ti := ci >> r.blockBits
		r.q.event(image.EvRefblockAlloc)
		b, err := r.block(ti)
		if err == nil && b == nil {
			if delta < 0 {
				err = image.Corrupt("%s: freeing cluster %#x whose refcount is 0", r.q.filename, ci<<r.q.clusterBits)
			} else {
				err = r.allocBlock(ci)
			}
		}
		if err == errAgain && r.free > start {
			// search again from the same clusters: they may still be free
			r.free = start
		}
		if err != nil {
			if ci > start {
				if rerr := r.update(start, ci-start, -delta); rerr != nil {
					return halfDone{rerr}
				}
			}
			return err
		}
		lo := ci & (r.perBlock - 1)
		hi := min(lo+(start+n-ci), r.perBlock)
		if r.bits == 16 && delta == 1 && r.addOne16(b.buf, lo, hi) {
			if err := r.writeBlock(b, lo, hi); err != nil {
				return r.undoFailedWrite(b, start, ci, lo, hi, delta, err)
			}
			ci += hi - lo
			continue
		}
		for i := lo; i < hi; i++ {
			v := r.get1(b.buf, i)
			switch {
			case delta > 0 && v == r.max:
				r.undoBlock(b, lo, i, delta)
				if ci > start {
					r.update(start, ci-start, -delta)
				}
				return image.Errorf(image.ErrUnsupported, "%s: refcount of cluster %#x would overflow", r.q.filename, (ci-lo+i)<<r.q.clusterBits)
			case delta < 0 && v == 0:
				r.undoBlock(b, lo, i, delta)
				if ci > start {
					r.update(start, ci-start, -delta)
				}
				return image.Corrupt("%s: refcount of cluster %#x would become negative", r.q.filename, (ci-lo+i)<<r.q.clusterBits)
			}
			nv := uint64(int64(v) + delta)
			r.set1(b.buf, i, nv)
			if nv == 0 && ci-lo+i < r.free {
				r.free = ci - lo + i
			}
			if nv == 0 && r.q.metaClusters != nil {
				delete(r.q.metaClusters, ci-lo+i)
			}
			if nv == 0 && r.q.freeByte != 0 && r.q.freeByte>>r.q.clusterBits == ci-lo+i {
				// the cluster holding the tail of the last compressed
				// cluster was freed: it may be reused for anything
				r.q.freeByte = 0
			}
		}
		if err := r.writeBlock(b, lo, hi); err != nil {
			return r.undoFailedWrite(b, start, ci, lo, hi, delta, err)
		}
		ci += hi - lo
	}
	return nil
}

// undoFailedWrite puts back, after a refcount block write failed, the
// entries [lo, hi) of that block and the clusters [start, ci) done before
// it, so that the refcounts in memory stay those on disk; it returns err.
func (r *refcounts) undoFailedWrite(b *refBlock, start, ci, lo, hi, delta int64, err error) error {
	r.undoBlock(b, lo, hi, delta)
	if ci > start {
		if rerr := r.update(start, ci-start, -delta); rerr != nil {
			return halfDone{err}
		}
	}
	return err
}

// halfDone is the error of an update whose undo failed too: part of
// the clusters have the new refcount on disk (and in memory), part the
// old, so the update must not be tried again.
type halfDone struct{ error }

func (h halfDone) Unwrap() error { return h.error }

func (r *refcounts) undoBlock(b *refBlock, lo, hi, delta int64) {
	for i := lo; i < hi; i++ {
		r.set1(b.buf, i, uint64(int64(r.get1(b.buf, i))-delta))
	}
}

// writeBlock writes the bytes of entries [lo, hi) of block b.
func (r *refcounts) writeBlock(b *refBlock, lo, hi int64) error {
	if r.q.creating {
		if r.dirty == nil {
			r.dirty = map[int64]*refBlock{}
		}
		r.dirty[b.offset] = b
		return nil
	}
	if r.deferring {
		if b.lo >= b.hi {
			b.lo, b.hi = lo, hi
		} else {
			b.lo, b.hi = min(b.lo, lo), max(b.hi, hi)
		}
		if r.pending == nil {
			r.pending = map[int64]*refBlock{}
		}
		r.pending[b.offset] = b
		return nil
	}
	if b.lo < b.hi {
		// changes held back in the same block go out with this one
		lo, hi = min(b.lo, lo), max(b.hi, hi)
		b.lo, b.hi = 0, 0
		delete(r.pending, b.offset)
		r.blocks.put(b.offset, b)
	}
	blo, bhi := r.byteRange(lo, hi)
	r.q.event(image.EvRefblockUpdatePart)
	return r.q.writeMeta(b.buf[blo:bhi], b.offset+blo)
}

// allocBlock places the missing refcount block that covers cluster ci
// (qemu's alloc_refcount_block) and returns errAgain when done.
func (r *refcounts) allocBlock(ci int64) error {
	q := r.q
	// the new block's own refcount and the table are written through:
	// the block is hooked into the file at once
	if r.deferring {
		r.deferring = false
		defer func() { r.deferring = true }()
	}
	ti := ci >> r.blockBits
	nb, err := r.allocNoRef(1)
	if err != nil {
		return err
	}
	b := &refBlock{offset: nb << q.clusterBits, buf: make([]byte, q.clusterSize)}
	if nb>>r.blockBits == ti {
		// the block describes itself
		r.set1(b.buf, nb&(r.perBlock-1), 1)
	} else if err := r.update(nb, 1, 1); err != nil {
		return err
	}
	q.event(image.EvRefblockAllocWrite)
	if err := q.writeMeta(b.buf, b.offset); err != nil {
		return err
	}
	if err := q.barrier(); err != nil {
		return err
	}
	if ti < int64(len(r.table)) {
		var e [8]byte
		be.PutUint64(e[:], uint64(b.offset))
		q.event(image.EvRefblockAllocHookup)
		if err := q.writeMeta(e[:], r.tableOffset+ti*8); err != nil {
			return err
		}
		r.table[ti] = uint64(b.offset)
		r.blocks.put(b.offset, b)
		q.addMeta(b.offset, "refcount block")
		return errAgain
	}
	q.event(image.EvReftableGrow)
	blocksUsed := (max(ci+1, nb+1) + r.perBlock - 1) / r.perBlock
	if _, err := r.area(blocksUsed*r.perBlock*q.clusterSize, 0, false, ti, b.offset); err != nil {
		return err
	}
	r.blocks.put(b.offset, b)
	q.addMeta(b.offset, "refcount block")
	return errAgain
}

// metadataSize is qemu's qcow2_refcount_metadata_size: the refcount blocks
// and table clusters that cover clusters clusters and themselves.
func metadataSize(clusters, cs int64, order uint32, generous bool) (blocks, table int64) {
	perTableCluster := cs / 8
	perBlock := cs * 8 >> order
	var last, n int64
	for {
		last = n
		blocks = (clusters + table + blocks + perBlock - 1) / perBlock
		table = (blocks + perTableCluster - 1) / perTableCluster
		n = clusters + blocks + table
		if n == last && generous {
			clusters += (table + 1) / 2
			n = 0
			generous = false
		}
		if n == last {
			return blocks, table
		}
	}
}

// area creates a new, larger refcount table at start (a cluster offset
// beyond everything in use) with the refcount blocks missing up to it, all
// describing themselves, then switches the header to it and frees the old
// table (qemu's qcow2_refcount_area). newIndex/newOffset hook up a block
// placed by the caller. It returns the end of the new structures.
func (r *refcounts) area(start int64, additional int64, exact bool, newIndex int64, newOffset int64) (int64, error) {
	q := r.q
	cs := q.clusterSize
	total, _ := metadataSize(start/cs+additional, cs, q.h.refcountOrder, !exact)
	areaIndex := (start / cs) / r.perBlock
	tableSize := total
	if !exact {
		tableSize += (total + 1) / 2
	}
	perCluster := cs / 8
	tableSize = (tableSize + perCluster - 1) / perCluster * perCluster
	if tableSize*8 > maxRefcountTableBytes {
		return 0, image.Errorf(image.ErrUnsupported, "%s: refcount table would exceed %d bytes", q.filename, maxRefcountTableBytes)
	}
	tableClusters := tableSize * 8 / cs
	newTable := make([]uint64, tableSize)
	copy(newTable, r.table)
	if newOffset != 0 {
		newTable[newIndex] = uint64(newOffset)
	}
	var missing int64
	for i := areaIndex; i < total; i++ {
		if newTable[i] == 0 {
			missing++
		}
	}
	tableOffset := start + missing*cs
	end := tableOffset + tableClusters*cs
	blockOffset := start
	for i := areaIndex; i < total; i++ {
		var b *refBlock
		fresh := false
		if newTable[i] != 0 {
			r.table = newTable // block() reads r.table
			var err error
			if b, err = r.block(i); err != nil {
				return 0, err
			}
		} else {
			b = &refBlock{offset: blockOffset, buf: make([]byte, cs)}
			newTable[i] = uint64(blockOffset)
			blockOffset += cs
			fresh = true
		}
		first := i * r.perBlock * cs
		lo, hi := int64(0), int64(0)
		if first < end {
			j := int64(0)
			if first < start {
				j = (start - first) / cs
			}
			endIndex := min((end-first)/cs, r.perBlock)
			lo, hi = j, endIndex
			for ; j < endIndex; j++ {
				r.set1(b.buf, j, 1)
			}
		}
		if fresh {
			q.event(image.EvRefblockAllocWriteBlock)
			if err := q.writeMeta(b.buf, b.offset); err != nil {
				return 0, err
			}
			r.blocks.put(b.offset, b)
			q.addMeta(b.offset, "refcount block")
		} else if hi > lo {
			if err := r.writeBlock(b, lo, hi); err != nil {
				return 0, err
			}
		}
	}
	buf := make([]byte, tableSize*8)
	for i, e := range newTable {
		be.PutUint64(buf[i*8:], e)
	}
	q.event(image.EvRefblockAllocWriteTable)
	if err := q.writeMeta(buf, tableOffset); err != nil {
		return 0, err
	}
	// the new blocks and table are on disk before the header names them
	if err := q.barrier(); err != nil {
		return 0, err
	}
	oldOffset, oldClusters := r.tableOffset, r.tableClusters
	r.table, r.tableOffset, r.tableClusters = newTable, tableOffset, tableClusters
	q.h.refcountTableOffset, q.h.refcountTableClusters = uint64(tableOffset), uint32(tableClusters)
	var hdr [12]byte
	be.PutUint64(hdr[:], uint64(tableOffset))
	be.PutUint32(hdr[8:], uint32(tableClusters))
	q.event(image.EvRefblockAllocSwitch)
	if err := q.writeHeaderBytes(hdr[:], offRefcountTableOffset); err != nil {
		return 0, err
	}
	if oldClusters > 0 {
		// the header must point at the new table before the old one's
		// clusters can be reused
		if err := q.barrier(); err != nil {
			return 0, err
		}
		if err := r.release(oldOffset, oldClusters*cs); err != nil {
			return 0, err
		}
	}
	return end, nil
}

// lastUsed is the highest cluster index below n with a non-zero refcount,
// -1 if none (qemu's qcow2_get_last_cluster).
func (r *refcounts) lastUsed(n int64) (int64, error) {
	for ci := n - 1; ci >= 0; ci-- {
		v, err := r.get(ci)
		if err != nil {
			return 0, err
		}
		if v != 0 {
			return ci, nil
		}
	}
	return -1, nil
}

// writeDirty writes the blocks changed during creation, in file order.
func (r *refcounts) writeDirty() error {
	offs := make([]int64, 0, len(r.dirty))
	for off := range r.dirty {
		offs = append(offs, off)
	}
	slices.Sort(offs)
	for _, off := range offs {
		if err := r.q.writeMeta(r.dirty[off].buf, off); err != nil {
			return err
		}
	}
	r.dirty = nil
	return nil
}

// firstUsed returns the index of the first non-zero refcount among
// entries [lo, hi) of a block, -1 if all are zero. Whole bytes are
// scanned eight at a time.
func (r *refcounts) firstUsed(buf []byte, lo, hi int64) int64 {
	if r.bits < 8 {
		for i := lo; i < hi; i++ {
			if r.get1(buf, i) != 0 {
				return i
			}
		}
		return -1
	}
	w := int64(r.bits / 8)
	b := buf[lo*w : hi*w]
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if be.Uint64(b[i:]) != 0 {
			break
		}
	}
	for ; i < len(b); i++ {
		if b[i] != 0 {
			return lo + int64(i)/w
		}
	}
	return -1
}

// addOne16 adds one to 16-bit refcounts [lo, hi), the common case of
// allocation. It changes nothing and returns false if one would overflow.
func (r *refcounts) addOne16(buf []byte, lo, hi int64) bool {
	for i := lo; i < hi; i++ {
		if be.Uint16(buf[i*2:]) == 0xffff {
			return false
		}
	}
	for i := lo; i < hi; i++ {
		p := buf[i*2:]
		be.PutUint16(p, be.Uint16(p)+1)
	}
	return true
}

// dropEmptyBlocks takes out of the table the refcount blocks that count
// nothing but themselves, as qemu's shrink does (qcow2_shrink_reftable):
// the table is written and synced first, then a block that another block
// counts loses that reference. It returns the offsets of the blocks.
func (r *refcounts) dropEmptyBlocks() ([]int64, error) {
	table := slices.Clone(r.table)
	var dropped []int64
	for ti, e := range r.table {
		off := int64(e & refcountTableOffsetMask)
		if off == 0 {
			continue
		}
		b, err := r.block(int64(ti))
		if err != nil {
			return nil, err
		}
		own := int64(-1)
		if ci := off >> r.q.clusterBits; ci>>r.blockBits == int64(ti) {
			own = ci & (r.perBlock - 1)
		}
		if own < 0 && r.firstUsed(b.buf, 0, r.perBlock) >= 0 ||
			own >= 0 && (r.firstUsed(b.buf, 0, own) >= 0 || r.firstUsed(b.buf, own+1, r.perBlock) >= 0) {
			continue
		}
		table[ti] = 0
		dropped = append(dropped, off)
	}
	if len(dropped) == 0 {
		return nil, nil
	}
	if err := r.q.writeMeta(encodeL1(table), r.tableOffset); err != nil {
		return nil, err
	}
	if err := r.q.barrier(); err != nil {
		return nil, err
	}
	r.table = table
	for _, off := range dropped {
		ci := off >> r.q.clusterBits
		r.blocks.drop(off)
		delete(r.q.metaClusters, ci)
		r.free = min(r.free, ci)
		if b, err := r.block(ci >> r.blockBits); err == nil && b != nil {
			// counted by a block that stays
			if err := r.update(ci, 1, -1); err != nil {
				return nil, err
			}
		}
	}
	return dropped, nil
}
