package qcow2

import "testing"

// TestPlanTail checks the tables after the data: in file order, each
// after the one before, cluster aligned, and refcount blocks enough for
// every cluster of the file, their own and the table's included.
func TestPlanTail(t *testing.T) {
	cases := []struct {
		dataEnd, l2Tables, l1Entries, cs, perBlock int64
	}{
		{65536, 0, 0, 65536, 32768},
		{65536, 0, 2048, 65536, 32768},         // empty 1 TiB image
		{1 << 30, 16, 16, 65536, 32768},        // 1 GiB of data
		{512 * 100000, 400, 400, 512, 4096},    // 512-byte clusters, 1-bit refcounts
		{512 * 100000, 400, 400, 512, 64},      // 64-bit refcounts: many blocks
		{2 << 20 * 10, 1, 1, 2 << 20, 1 << 20}, // 2 MiB clusters
		{65536 * 32769, 1, 1, 65536, 32768},    // one cluster past a block
	}
	for _, c := range cases {
		tail, err := planTail(c.dataEnd, c.l2Tables, c.l1Entries, c.cs, c.perBlock)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		sections := []struct {
			name      string
			off, size int64
		}{
			{"L2 tables", tail.l2Offset, c.l2Tables * c.cs},
			{"refcount table", tail.reftableOffset, tail.reftableClusters * c.cs},
			{"refcount blocks", tail.refblockOffset, tail.refblocks * c.cs},
			{"L1 table", tail.l1Offset, tail.l1Clusters * c.cs},
		}
		at := c.dataEnd
		for _, s := range sections {
			if s.off != at || s.off%c.cs != 0 {
				t.Errorf("%+v: %s at %d, want %d (cluster aligned)", c, s.name, s.off, at)
			}
			at = s.off + s.size
		}
		if tail.end != at {
			t.Errorf("%+v: end %d, want %d", c, tail.end, at)
		}
		if tail.l1Clusters*c.cs < c.l1Entries*8 {
			t.Errorf("%+v: L1 of %d clusters for %d entries", c, tail.l1Clusters, c.l1Entries)
		}
		if clusters := tail.end / c.cs; tail.refblocks*c.perBlock < clusters {
			t.Errorf("%+v: %d refcount blocks count %d clusters, the file has %d", c, tail.refblocks, tail.refblocks*c.perBlock, clusters)
		}
		if tail.reftableClusters*c.cs/8 < tail.refblocks {
			t.Errorf("%+v: refcount table of %d clusters for %d blocks", c, tail.reftableClusters, tail.refblocks)
		}
		if tail.refblocks > 1 && (tail.refblocks-1)*c.perBlock >= tail.end/c.cs {
			t.Errorf("%+v: %d refcount blocks, one more than the file needs", c, tail.refblocks)
		}
	}
}

// TestStreamBound: the largest layout holds every cluster written, one
// host cluster per guest cluster, with its tables.
func TestStreamBound(t *testing.T) {
	for _, bits := range []uint32{9, 16, 21} {
		h := &header{version: 3, clusterBits: bits, refcountOrder: 4}
		const size = 100<<20 + 512
		bound, err := streamBound(size, h)
		if err != nil {
			t.Fatal(err)
		}
		cs := h.clusterSize()
		clusters := (size + cs - 1) / cs
		if min := (1 + clusters + (clusters+(1<<h.l2Bits())-1)>>h.l2Bits()) * cs; bound < min {
			t.Errorf("cluster bits %d: bound %d below header, data and L2 tables (%d)", bits, bound, min)
		}
	}
}
