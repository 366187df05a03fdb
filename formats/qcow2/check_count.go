package qcow2

import (
	"math"

	"qimg/image"
)

// refCounts is the reference count of every host cluster as the check
// computes it (qemu's in-memory refcount table): one byte per cluster;
// counts of 255 and more continue in a map, since only clusters shared by
// many snapshots or compressed clusters reach them.
type refCounts struct {
	c   []uint8
	big map[int64]uint64 // count - 255, for clusters whose byte is 255
	// fast is min(255, refcount_max): below it a count is one byte.
	fast uint8
	max  uint64 // refcount_max of the image
}

func newRefCounts(n int64, max uint64) *refCounts {
	// one more cluster: the last one may be referenced partly beyond the
	// end of the file
	r := &refCounts{c: make([]uint8, n, n+1), max: max, fast: 255}
	if max < 255 {
		r.fast = uint8(max)
	}
	return r
}

func (r *refCounts) len() int64 { return int64(len(r.c)) }

func (r *refCounts) get(ci int64) uint64 {
	v := uint64(r.c[ci])
	if v == 255 {
		v += r.big[ci]
	}
	return v
}

func (r *refCounts) set(ci int64, v uint64) {
	if v < 255 {
		r.c[ci] = uint8(v)
		delete(r.big, ci)
		return
	}
	r.c[ci] = 255
	if r.big == nil {
		r.big = map[int64]uint64{}
	}
	if v == 255 {
		delete(r.big, ci)
	} else {
		r.big[ci] = v - 255
	}
}

// grow makes clusters below n addressable (zero counts).
func (r *refCounts) grow(n int64) {
	if n <= int64(len(r.c)) {
		return
	}
	if n <= int64(cap(r.c)) {
		r.c = r.c[:n]
		return
	}
	nc := make([]uint8, n, n+n/8)
	copy(nc, r.c)
	r.c = nc
}

// reset sets every count to zero.
func (r *refCounts) reset() {
	clear(r.c)
	r.big = nil
}

// bitset is one bit per host cluster.
type bitset []uint64

func newBitset(n int64) bitset { return make(bitset, (n+63)/64) }

func (b bitset) set(i int64)      { b[i>>6] |= 1 << uint(i&63) }
func (b bitset) has(i int64) bool { return b[i>>6]>>uint(i&63)&1 != 0 }

// inc adds one reference to every cluster of [off, off+size) (qemu's
// qcow2_inc_refcounts_imrt). A range ending a cluster or more beyond the
// end of the file is a corruption and counts nothing; the last cluster may
// be partly beyond the end.
func (c *checker) inc(off, size int64) {
	if size <= 0 || c.failed != nil {
		return
	}
	// qemu's test, in its wrapping 64-bit arithmetic
	if off+size-c.fileSize >= c.cs {
		c.logf("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x%x size 0x%x", uint64(off), uint64(size))
		c.res.corruptions++
		return
	}
	if off < 0 || off > math.MaxInt64-size {
		// qemu's count grows to the cluster index and fails: ENOMEM
		c.res.checkErrors++
		c.failed = image.Errorf(image.ErrUnsupported, "Cannot allocate memory")
		return
	}
	bits := c.q.clusterBits
	first, last := off>>bits, (off+size-1)>>bits
	c.refs.grow(last + 1)
	for k := first; k <= last; k++ {
		c.inc1(k)
	}
}

// inc1 adds one reference to cluster k, which the caller made addressable.
func (c *checker) inc1(k int64) {
	r := c.refs
	if v := r.c[k]; v < r.fast {
		r.c[k] = v + 1
		return
	}
	v := r.get(k)
	if v >= r.max {
		c.logf("ERROR: overflow cluster offset=0x%x", k<<c.q.clusterBits)
		c.logf("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing")
		c.res.corruptions++
		return
	}
	r.set(k, v+1)
}

// resetCopied prepares the per-cluster COPIED records of a new count.
func (c *checker) resetCopied() {
	n := c.refs.len() + 1
	if c.copiedSet == nil || int64(len(c.copiedSet))*64 < n {
		c.copiedSet, c.copiedClear = newBitset(n), newBitset(n)
	} else {
		clear(c.copiedSet)
		clear(c.copiedClear)
	}
	c.copiedSlow = false
}

// countRefblocks counts the refcount blocks and checks their entries in
// the refcount table (qemu's check_refblocks).
func (c *checker) countRefblocks(fixErrors bool) error {
	verb := "ERROR"
	if fixErrors {
		verb = "Repairing"
	}
	for i := 0; i < len(c.stored.table); i++ {
		e := c.stored.table[i]
		uoff := e & refcountTableOffsetMask
		off := int64(uoff) // negative when beyond 2^63: outside the image
		ci := int64(uoff >> c.q.clusterBits)
		if e&^refcountTableOffsetMask != 0 {
			c.logf("ERROR refcount table entry %d has reserved bits set", i)
			c.res.corruptions++
			c.rebuild = true
			continue
		}
		if off&(c.cs-1) != 0 {
			c.logf("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted", i)
			c.res.corruptions++
			c.rebuild = true
			continue
		}
		if ci >= c.refs.len() {
			c.res.corruptions++
			c.logf("%s refcount block %d is outside image", verb, i)
			if fixErrors {
				if err := c.growFileFor(uoff); err != nil {
					c.rebuild = true
					c.logf("ERROR could not resize image: %v", err)
					continue
				}
				c.res.corruptions--
				c.res.corruptionsFixed++
				c.inc(off, c.cs)
			}
			continue
		}
		if off != 0 {
			c.inc(off, c.cs)
			if v := c.refs.get(ci); v != 1 {
				c.logf("ERROR refcount block %d refcount=%d", i, v)
				c.res.corruptions++
				c.rebuild = true
			}
		}
	}
	return nil
}
