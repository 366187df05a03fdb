package qcow2

import "qimg/image"

// The layout of an image written in file order (stream.go): the header in
// cluster 0, guest data from cluster 1 on in the order it came, then the
// metadata that describes it, each part after the one before:
//
//	header | data … | L2 tables | refcount table | refcount blocks | L1 table
//
// The L1 table comes last: in an image with no data it is all zeroes,
// which an upload sends without writing them.

// streamTail places the metadata after the data.
type streamTail struct {
	l2Offset         int64 // the first L2 table; the others follow, one a cluster
	reftableOffset   int64
	reftableClusters int64
	refblockOffset   int64 // the first refcount block; the others follow
	refblocks        int64
	l1Offset         int64
	l1Clusters       int64
	end              int64 // the file's size
}

// planTail places l2Tables L2 tables, the refcount structures and an L1
// table of l1Entries after dataEnd (cluster aligned). The refcount blocks
// count every cluster of the file, themselves and the table included.
func planTail(dataEnd, l2Tables, l1Entries, clusterSize, refsPerBlock int64) (streamTail, error) {
	cs := clusterSize
	t := streamTail{l2Offset: dataEnd, l1Clusters: (l1Entries*8 + cs - 1) / cs}
	used := dataEnd/cs + l2Tables + t.l1Clusters
	// more blocks may need more table, which may need more blocks
	for {
		blocks := (used + t.reftableClusters + t.refblocks + refsPerBlock - 1) / refsPerBlock
		table := (blocks*8 + cs - 1) / cs
		if blocks == t.refblocks && table == t.reftableClusters {
			break
		}
		t.refblocks, t.reftableClusters = blocks, table
	}
	if t.reftableClusters*cs > maxRefcountTableBytes {
		return t, image.Errorf(image.ErrUnsupported, "the image needs a refcount table larger than %d bytes", maxRefcountTableBytes)
	}
	t.reftableOffset = t.l2Offset + l2Tables*cs
	t.refblockOffset = t.reftableOffset + t.reftableClusters*cs
	t.l1Offset = t.refblockOffset + t.refblocks*cs
	t.end = t.l1Offset + t.l1Clusters*cs
	return t, nil
}

// streamBound is the largest file an image of size guest bytes written
// in file order can take: every cluster allocated. Compressed clusters
// take less than a cluster each, and the rounding up before an
// uncompressed cluster never takes the file past one cluster per guest
// cluster written.
func streamBound(size int64, h *header) (int64, error) {
	cs := h.clusterSize()
	clusters := (size + cs - 1) / cs
	l1 := l1Entries(size, h.clusterBits, h.l2Bits())
	t, err := planTail(cs+clusters*cs, l1, l1, cs, refsPerBlock(h))
	return t.end, err
}

// refsPerBlock is the number of refcounts one refcount block holds.
func refsPerBlock(h *header) int64 {
	return h.clusterSize() * 8 >> h.refcountOrder
}
