package image

import "bytes"

// CompareResult is what Compare found; the first difference ends it.
type CompareResult struct {
	SizeMismatch bool
	// Difference is how the images differ: DiffNone, DiffContent or
	// DiffStatus (strict mode only); Offset is where.
	Difference Difference
	Offset     int64
}

// Difference kinds of CompareResult.
type Difference int

const (
	DiffNone    Difference = iota
	DiffContent            // guest data differs
	DiffStatus             // allocation differs (strict mode)
	DiffSize               // sizes differ (strict mode)
)

// compareChunk bounds one comparison read.
const compareChunk = 2 << 20

// Compare compares the guest view of two chains as qemu-img compare does:
// runs that both chains read as zero are skipped through block status, a
// run allocated in only one chain must read as zeroes there, other runs are
// read and compared. The common part is compared first; beyond it the
// larger image must read as zeroes. Offsets of content differences are
// those of the first differing 512-byte sector. strict also fails on a
// size difference and on any difference in block status. sizeMismatch,
// when set, is called once the common part compared equal and the sizes
// differ (qemu-img prints its warning there).
func Compare(a, b *Node, strict bool, progress func(done, total int64), sizeMismatch func()) (*CompareResult, error) {
	res := &CompareResult{}
	sa, sb := a.Size(), b.Size()
	if sa != sb {
		res.SizeMismatch = true
		if strict {
			res.Difference = DiffSize
			return res, nil
		}
	}
	common, total := min(sa, sb), max(sa, sb)
	report := func(done int64) {
		if progress != nil {
			progress(done, total)
		}
	}
	buf1 := make([]byte, compareChunk)
	buf2 := make([]byte, compareChunk)
	for off := int64(0); off < common; {
		e1, err := a.BlockStatusChain(off, common-off)
		if err != nil {
			return nil, err
		}
		e2, err := b.BlockStatusChain(off, common-off)
		if err != nil {
			return nil, err
		}
		// runs are compared whole; reads go by chunks
		n := min(e1.Length, e2.Length)
		if strict && qemuStatus(a, e1, common) != qemuStatus(b, e2, common) {
			res.Difference, res.Offset = DiffStatus, off
			return res, nil
		}
		switch {
		case e1.Zero && e2.Zero:
		case e1.Allocated == e2.Allocated:
			if e1.Allocated {
				n = min(n, compareChunk)
				if err := a.ReadPadded(buf1[:n], off); err != nil {
					return nil, err
				}
				if err := b.ReadPadded(buf2[:n], off); err != nil {
					return nil, err
				}
				if d := firstDifferingSector(buf1[:n], buf2[:n]); d >= 0 {
					res.Difference, res.Offset = DiffContent, off+d
					return res, nil
				}
			}
		default:
			n = min(n, compareChunk)
			other := a
			if e2.Allocated {
				other = b
			}
			if d, err := firstNonZeroSector(other, buf1[:n], off); err != nil || d >= 0 {
				if err == nil {
					res.Difference, res.Offset = DiffContent, off+d
				}
				return res, err
			}
		}
		off += n
		report(off)
	}
	if sa != sb {
		if sizeMismatch != nil {
			sizeMismatch()
		}
		larger := a
		if sb > sa {
			larger = b
		}
		for off := common; off < total; {
			e, err := larger.BlockStatusChain(off, total-off)
			if err != nil {
				return nil, err
			}
			n := e.Length
			if e.Allocated && !e.Zero {
				n = min(n, compareChunk)
				if d, err := firstNonZeroSector(larger, buf1[:n], off); err != nil || d >= 0 {
					if err == nil {
						res.Difference, res.Offset = DiffContent, off+d
					}
					return res, err
				}
			}
			off += n
			report(off)
		}
	}
	return res, nil
}

// blockStatus is the part of qemu's block status word that strict mode
// compares: allocation, zero, data, a valid host offset, and whether the
// run ends at the image's end (BDRV_BLOCK_EOF).
type blockStatus struct {
	allocated, zero, data, offsetValid, eof bool
}

// qemuStatus is the status qemu reports for the extent e of n's chain.
// Zeroes beyond the end of a short backing file count as allocated there,
// as qemu synthesizes them; the run ends at the image's end when it
// reaches size (both images have that size in strict mode).
func qemuStatus(n *Node, e Extent, size int64) blockStatus {
	s := blockStatus{allocated: e.Allocated, zero: e.Zero, data: e.Data, offsetValid: e.HostOffset >= 0,
		eof: e.End() == size}
	if !e.Allocated && e.Zero {
		if chain := n.Chain(); e.Depth < len(chain) && chain[e.Depth].Backing() != nil {
			s.allocated, s.offsetValid = true, false
		}
	}
	return s
}

// firstDifferingSector returns the offset of the first 512-byte sector in
// which a and b differ, or -1.
func firstDifferingSector(a, b []byte) int64 {
	for i := 0; i < len(a); i += 512 {
		j := min(i+512, len(a))
		if !bytes.Equal(a[i:j], b[i:j]) {
			return int64(i)
		}
	}
	return -1
}

// firstNonZeroSector reads len(buf) bytes of n at off and returns the
// offset (from off) of the first 512-byte sector that is not all zeroes,
// or -1.
func firstNonZeroSector(n *Node, buf []byte, off int64) (int64, error) {
	if err := n.ReadPadded(buf, off); err != nil {
		return 0, err
	}
	for i := 0; i < len(buf); i += 512 {
		if !IsZero(buf[i:min(i+512, len(buf))]) {
			return int64(i), nil
		}
	}
	return -1, nil
}
