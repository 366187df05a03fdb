package qcow2

import "qimg/image"

// Measure is qemu's qcow2_measure: the file size of a fully allocated
// image of the source's (or the given) size, and of one holding only the
// source's allocated clusters; metadata is always counted as for the fully
// allocated image, so required is an upper bound.
func Measure(m *image.MeasureContext) (*image.MeasureInfo, error) {
	p, err := parseCreateOptions(m.Options)
	if err != nil {
		return nil, err
	}
	cs := int64(1) << p.clusterBits
	size := m.Size
	if m.Source != nil {
		size = m.Source.Size()
	}
	virtual := roundUpTo(size, cs)
	var required int64
	full := p.prealloc == image.PreallocFull || p.prealloc == image.PreallocFalloc
	if m.Source != nil && !full {
		for off := int64(0); off < size; {
			e, err := m.Source.BlockStatusChain(off, size-off)
			if err != nil {
				return nil, err
			}
			n := e.Length
			if !e.Zero && e.Data && e.Allocated {
				// the rest of the cluster is counted whole
				n = roundUpTo(off+n, cs) - off
				required += off%cs + n
			}
			off += n
		}
	}
	if full {
		required = virtual
	}
	info := &image.MeasureInfo{FullyAllocated: preallocSize(virtual, cs, p.refcountOrder, p.extendedL2)}
	info.Required = info.FullyAllocated - virtual + required
	if p.version >= 3 && m.Source != nil {
		if s, ok := m.Source.Driver().(interface {
			SupportsBitmaps() bool
			image.BitmapStore
		}); ok && s.SupportsBitmaps() {
			b, err := bitmapsSize(s, size, cs)
			if err != nil {
				return nil, err
			}
			info.Bitmaps = &b
		}
	}
	return info, nil
}

// preallocSize is qemu's qcow2_calc_prealloc_size: header, L2 and L1
// tables, refcount structures and data of a fully allocated image.
func preallocSize(size, cs int64, refcountOrder uint32, extendedL2 bool) int64 {
	aligned := roundUpTo(size, cs)
	l2e := int64(8)
	if extendedL2 {
		l2e = 16
	}
	meta := cs // header
	nl2e := roundUpTo(aligned/cs, cs/l2e)
	meta += nl2e * l2e
	nl1e := roundUpTo(nl2e*l2e/cs, cs/8)
	meta += nl1e * 8
	blocks, table := metadataSize((meta+aligned)/cs, cs, refcountOrder, false)
	meta += (blocks + table) * cs
	return meta + aligned
}

// bitmapsSize is what copying the source's persistent bitmaps would take
// (qemu's qcow2_get_persistent_dirty_bitmap_size): every bitmap fully
// allocated, its table, and the directory.
func bitmapsSize(s image.BitmapStore, size, cs int64) (int64, error) {
	infos, err := s.Bitmaps()
	if err != nil {
		return 0, err
	}
	var total, dir int64
	for _, b := range infos {
		bits := (size + b.Granularity - 1) / b.Granularity
		clusters := ((bits+7)/8 + cs - 1) / cs
		total += clusters * cs
		total += roundUpTo(clusters*8, cs)
		dir += int64(dirEntrySize(len(b.Name), 0))
	}
	return total + roundUpTo(dir, cs), nil
}

func roundUpTo(v, a int64) int64 { return (v + a - 1) / a * a }
