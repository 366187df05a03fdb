package qed

import (
	"encoding/binary"
	"io"

	"qimg/image"
)

// checker walks the tables as qemu's qed_check does, marking every
// cluster a table refers to; a cluster referred to twice is a
// corruption, one referred to by nothing a leak.
type checker struct {
	q     *Image
	fix   bool
	r     *image.CheckResult
	used  []uint64 // bitmap of referenced clusters
	nclus uint64
}

// bytesToClusters is qemu's qed_bytes_to_clusters, whose division by
// cluster_size-1 (not cluster_size) decides which clusters its check
// looks at on large images; kept for identical counts.
func (c *checker) bytesToClusters(b uint64) uint64 {
	cs := uint64(c.q.l.clusterSize)
	return ((b + cs - 1) &^ (cs - 1)) / (cs - 1)
}

func (c *checker) markUsed(off uint64, n uint64) bool {
	cluster := c.bytesToClusters(off)
	ok := true
	for ; n > 0; n-- {
		if cluster < c.nclus {
			w, bit := cluster/64, uint64(1)<<(cluster%64)
			if c.used[w]&bit != 0 {
				c.r.Corruptions++
				ok = false
			}
			c.used[w] |= bit
		}
		cluster++
	}
	return ok
}

// Check is qemu-img check for QED: invalid table and cluster offsets are
// corruptions (cleared by -r), unreferenced clusters are leaks (never
// repaired, as in qemu), and a clean repaired image loses its need-check
// flag.
func (q *Image) Check(fix image.CheckFix, _ io.Writer) (*image.CheckResult, error) {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	q.mu.Lock()
	fileSize := q.l.fileSize
	q.mu.Unlock()
	c := &checker{q: q, fix: fix != 0, r: &image.CheckResult{}}
	c.nclus = c.bytesToClusters(uint64(fileSize))
	c.used = make([]uint64, (c.nclus+63)/64)
	cs := uint64(q.l.clusterSize)
	c.r.TotalClusters = int64((q.h.imageSize + cs - 1) / cs)
	if err := c.checkL1(); err != nil {
		return nil, err
	}
	for i := uint64(q.h.headerSize); i < c.nclus; i++ {
		if c.used[i/64]&(1<<(i%64)) == 0 {
			c.r.Leaks++
		}
	}
	if c.fix && c.r.Corruptions == 0 && c.r.CheckErrors == 0 && q.h.features&featureNeedCheck != 0 {
		if err := q.file.Flush(); err != nil {
			return nil, err
		}
		q.h.features &^= featureNeedCheck
		if err := q.writeHeader(); err != nil {
			return nil, err
		}
	}
	return c.r, nil
}

func (c *checker) checkL1() error {
	q := c.q
	l1, err := q.readTable(q.h.l1TableOffset)
	if err != nil {
		return err
	}
	c.markUsed(q.h.l1TableOffset, uint64(q.h.tableSize))
	invalid := false
	for i, off := range l1 {
		if off == 0 {
			continue
		}
		if !q.l.tableOK(off) {
			c.corrupt()
			if c.fix {
				l1[i] = 0
			}
			invalid = true
			continue
		}
		if !c.markUsed(off, uint64(q.h.tableSize)) {
			continue
		}
		l2, err := q.readTable(off)
		if err != nil {
			c.r.CheckErrors++
			continue
		}
		if c.checkL2(l2) > 0 && c.fix {
			if err := q.writeTable(off, l2); err != nil {
				c.r.CheckErrors++
			}
		}
	}
	if invalid && c.fix {
		if err := q.writeTable(q.h.l1TableOffset, l1); err != nil {
			c.r.CheckErrors++
		}
	}
	return nil
}

// corrupt counts an invalid offset: fixed under -r, found otherwise.
func (c *checker) corrupt() {
	if c.fix {
		c.r.CorruptionsFixed++
	} else {
		c.r.Corruptions++
	}
}

func (c *checker) checkL2(l2 []uint64) int {
	invalid := 0
	var last uint64
	for i, off := range l2 {
		if off == 0 || off == zeroCluster {
			continue
		}
		c.r.AllocatedClusters++
		if last != 0 && last+uint64(c.q.l.clusterSize) != off {
			c.r.FragmentedClusters++
		}
		last = off
		if !c.q.l.clusterOK(off) {
			c.corrupt()
			if c.fix {
				l2[i] = 0
			}
			invalid++
			continue
		}
		c.markUsed(off, 1)
	}
	return invalid
}

// readTable reads a whole L1 or L2 table (checked to lie in the file).
func (q *Image) readTable(off uint64) ([]uint64, error) {
	buf := make([]byte, q.l.tableBytes)
	if err := q.file.ReadPadded(buf, int64(off)); err != nil {
		return nil, err
	}
	t := make([]uint64, q.l.tableNelems)
	for i := range t {
		t[i] = binary.LittleEndian.Uint64(buf[i*8:])
	}
	return t, nil
}

// writeTable writes a repaired table back and forgets what was cached.
func (q *Image) writeTable(off uint64, t []uint64) error {
	buf := make([]byte, len(t)*8)
	for i, v := range t {
		binary.LittleEndian.PutUint64(buf[i*8:], v)
	}
	if err := q.file.WriteGrowing(buf, int64(off)); err != nil {
		return err
	}
	q.dropCachedL2(off)
	if off == q.h.l1TableOffset {
		q.mu.Lock()
		copy(q.l1, t)
		q.mu.Unlock()
	}
	return nil
}
