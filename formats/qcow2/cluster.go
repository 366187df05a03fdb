package qcow2

import (
	"math/bits"

	"qimg/image"
)

// l1Entry is an active L1 table entry.
type l1Entry uint64

// l2Offset is the host offset of the L2 table, 0 if none.
func (e l1Entry) l2Offset() int64 { return int64(uint64(e) & l1OffsetMask) }

// l2Entry is the first word of an L2 table entry (the cluster descriptor
// with its flags); l2Bitmap is the second word of an extended entry.
type l2Entry uint64

func (e l2Entry) compressed() bool { return e&oflagCompressed != 0 }

func (e l2Entry) hostOffset() int64 { return int64(uint64(e) & l2OffsetMask) }

// clusterType is the classification of a whole cluster's L2 entry
// (standard entries), or of one subcluster (extended entries).
type clusterType uint8

const (
	ctUnallocated  clusterType = iota // read from the backing file
	ctZero                            // reads as zeroes, no host cluster
	ctZeroAlloc                       // reads as zeroes, host cluster kept
	ctNormal                          // data at the host offset
	ctCompressed                      // compressed data
	ctUnallocAlloc                    // subcluster not allocated in an allocated cluster
)

// readsFromBacking reports whether the guest data of a run of this type
// comes from the backing file.
func (t clusterType) readsFromBacking() bool {
	return t == ctUnallocated || t == ctUnallocAlloc
}

// compressedDescriptor decodes the host offset and the byte length of
// the sectors holding a compressed cluster ("Compressed Clusters
// Descriptor": x = 62 - (cluster_bits - 8)).
func compressedDescriptor(e l2Entry, clusterBits uint32) (off, length int64) {
	x := 62 - (clusterBits - 8)
	off = int64(uint64(e) & (1<<x - 1))
	nsect := int64((uint64(e) &^ (oflagCopied | oflagCompressed)) >> x)
	// the first sector is the one containing off; nsect more follow
	length = (nsect+1)*compressedSectorSize - off%compressedSectorSize
	return off, length
}

// classifier holds what classifying entries needs to know of the image.
type classifier struct {
	version     uint32
	clusterBits uint32
	extendedL2  bool
	dataFile    bool // external data file: host offset 0 is valid
}

// classify classifies a standard L2 entry, or with extended L2 entries
// subcluster sc of the entry with the given bitmap. It rejects entries
// that qemu would report as corrupt: reserved bits, unaligned offsets,
// bitmaps with both bits set.
func (c *classifier) classify(e l2Entry, bitmap uint64, sc int) (clusterType, error) {
	if e.compressed() {
		if c.extendedL2 && bitmap != 0 {
			return 0, image.Corrupt("compressed cluster entry has a non-zero subcluster bitmap")
		}
		if c.dataFile {
			return 0, image.Corrupt("compressed cluster in an image with an external data file")
		}
		return ctCompressed, nil
	}
	if uint64(e)&l2ReservedMask != 0 {
		return 0, image.Corrupt("L2 entry %#x has reserved bits set", uint64(e))
	}
	host := e.hostOffset()
	if host&(1<<c.clusterBits-1) != 0 {
		return 0, image.Corrupt("Cluster allocation offset %#x unaligned", host)
	}
	allocated := host != 0 || (c.dataFile && e&oflagCopied != 0)
	if !c.extendedL2 {
		if e&oflagZero != 0 {
			if c.version < 3 {
				return 0, image.Corrupt("zero cluster flag in a version 2 image")
			}
			if allocated {
				return ctZeroAlloc, nil
			}
			return ctZero, nil
		}
		if allocated {
			return ctNormal, nil
		}
		return ctUnallocated, nil
	}
	if e&oflagZero != 0 {
		return 0, image.Corrupt("L2 entry %#x has the zero flag set with extended L2 entries", uint64(e))
	}
	alloc := bitmap>>uint(sc)&1 != 0
	zero := bitmap>>(32+uint(sc))&1 != 0
	switch {
	case alloc && zero:
		return 0, image.Corrupt("subcluster %d is both allocated and zero (bitmap %#x)", sc, bitmap)
	case alloc && !allocated:
		return 0, image.Corrupt("subcluster %d is allocated in an unallocated cluster (bitmap %#x)", sc, bitmap)
	case zero && allocated:
		return ctZeroAlloc, nil
	case zero:
		return ctZero, nil
	case alloc:
		return ctNormal, nil
	case allocated:
		return ctUnallocAlloc, nil
	}
	return ctUnallocated, nil
}

// sameRun reports whether the subclusters from sc on share the type of sc
// in bitmap, and returns how many do (at least 1).
func subclusterRun(bitmap uint64, sc int) int {
	alloc := uint32(bitmap)
	zero := uint32(bitmap >> 32)
	a := alloc >> uint(sc) & 1
	z := zero >> uint(sc) & 1
	n := 1
	for i := sc + 1; i < subclusters; i++ {
		if alloc>>uint(i)&1 != a || zero>>uint(i)&1 != z {
			break
		}
		n++
	}
	return n
}

// mapping is a run of guest bytes with one type and, for normal data,
// contiguous host bytes.
type mapping struct {
	typ    clusterType
	length int64
	host   int64 // host offset of the first byte (ctNormal, ctZeroAlloc)
	entry  l2Entry
}

// lookup maps the guest run [off, off+n) up to the end of its L2 table: it
// returns the longest prefix with one type and contiguous host offsets.
// The caller holds the metadata lock (read or write).
func (q *Image) lookup(off, n int64) (mapping, error) {
	cs := q.clusterSize
	l2Span := cs << q.l2Bits
	l1i := off / l2Span
	// never cross an L2 table
	if rest := l2Span - off%l2Span; n > rest {
		n = rest
	}
	if l1i >= int64(len(q.l1)) {
		return mapping{typ: ctUnallocated, length: n}, nil
	}
	l2off := l1Entry(q.l1[l1i]).l2Offset()
	if l2off == 0 {
		return mapping{typ: ctUnallocated, length: n}, nil
	}
	t, err := q.l2Table(l2off)
	if err != nil {
		return mapping{}, err
	}
	return q.walkL2(t, off, n)
}

// walkL2 merges the entries of one L2 table from guest offset off.
func (q *Image) walkL2(t *l2Table, off, n int64) (mapping, error) {
	cs := q.clusterSize
	idx := int((off >> q.clusterBits) & (1<<q.l2Bits - 1))
	inCluster := off & (cs - 1)
	var m mapping
	var unit int64 = cs // granularity of one step
	if q.extendedL2 {
		unit = cs / subclusters
	}
	first := true
	pos := inCluster // offset within the current cluster
	for m.length < n && idx < len(t.entries) {
		e := l2Entry(t.entries[idx])
		var bitmap uint64
		if q.extendedL2 {
			bitmap = t.bitmaps[idx]
		}
		sc := int(pos / unit)
		typ, err := q.cls.classify(e, bitmap, sc)
		if err != nil {
			return mapping{}, q.corruptEntry(err, t.offset, idx)
		}
		// how many bytes of this cluster share typ from pos on
		var span int64
		if q.extendedL2 && typ != ctCompressed {
			k := subclusterRun(bitmap, sc)
			span = int64(sc+k)*unit - pos
		} else {
			span = cs - pos
		}
		var host int64 = -1
		if typ == ctNormal || typ == ctZeroAlloc || typ == ctUnallocAlloc {
			host = e.hostOffset() + pos
		}
		if first {
			m = mapping{typ: typ, host: host, entry: e}
			first = false
		} else {
			if typ != m.typ || typ == ctCompressed {
				break
			}
			if host >= 0 && host != m.host+m.length {
				// a run keeps one contiguous host range, as qemu's
				// count_contiguous_subclusters: map reports its place
				break
			}
		}
		m.length += span
		pos += span
		if pos >= cs {
			pos = 0
			idx++
		}
		if typ == ctCompressed {
			break
		}
	}
	if m.length > n {
		m.length = n
	}
	return m, nil
}

// corruptEntry words a bad L2 entry with where it is.
func (q *Image) corruptEntry(err error, l2off int64, idx int) error {
	return image.Corrupt("%s: %v (L2 table at %#x, index %d)", q.filename, err, l2off, idx)
}

// popcount32 counts set bits (for the allocation bitmaps).
func popcount32(x uint32) int { return bits.OnesCount32(x) }
