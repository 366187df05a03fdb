package qcow2

import (
	"fmt"

	"qimg/image"
)

// Persistent bitmaps of an image written in file order (convert
// --bitmaps): stored after the guest data, once it is all written, as
// the local image stores them (bitmap data clusters, each bitmap's
// table, the directory), each in the next clusters; the header that
// names them is written last with the rest.

// planner is the image as the bitmap checks and plans of a local image
// need to see it: the header, the sizes.
func (s *streamImage) planner() *Image {
	return &Image{h: s.h, size: s.size, clusterSize: s.cs, clusterBits: s.clusterBits, l2Bits: s.l2Bits}
}

// SupportsBitmaps: version 3 images only.
func (s *streamImage) SupportsBitmaps() bool { return s.h.version >= 3 }

// Bitmaps lists the bitmaps stored so far.
func (s *streamImage) Bitmaps() ([]image.BitmapInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bitmaps, nil
}

// LoadBitmap: a bitmap once written is not read back.
func (s *streamImage) LoadBitmap(name string) (*image.DirtyBitmap, error) {
	return nil, fmt.Errorf("Dirty bitmap '%s' not found", name)
}

// DefaultBitmapGranularity is the local image's.
func (s *streamImage) DefaultBitmapGranularity() int64 { return s.planner().DefaultBitmapGranularity() }

// CanStoreBitmap checks a new bitmap as the local image does.
func (s *streamImage) CanStoreBitmap(name string, granularity int64, others []image.BitmapInfo) error {
	return s.planner().CanStoreBitmap(name, granularity, others)
}

// StoreBitmaps writes the set of bitmaps after the data: the set is
// stored once, as the copy ends.
func (s *streamImage) StoreBitmaps(set []image.BitmapUpdate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	if s.bitmaps != nil {
		return image.Errorf(image.ErrUnsupported, "the bitmaps of an image written to S3 are stored once")
	}
	q := s.planner()
	p, err := q.planBitmaps(nil, set)
	if err != nil {
		return err
	}
	for i := range p.entries {
		if p.data[i] == nil {
			return fmt.Errorf("Dirty bitmap '%s' not found", p.entries[i].name)
		}
		if err := s.writeBitmap(&p.entries[i], p.data[i]); err != nil {
			return err
		}
	}
	var dirOff int64
	if len(p.entries) > 0 {
		if dirOff, err = s.appendClusters(encodeBitmapDir(p.entries)); err != nil {
			return err
		}
	}
	h, err := q.bitmapHeader(p.count, uint64(p.dirSize), uint64(dirOff))
	if err != nil {
		return err
	}
	s.h = h
	s.bitmaps = make([]image.BitmapInfo, 0, len(set))
	for _, u := range set {
		s.bitmaps = append(s.bitmaps, u.BitmapInfo)
	}
	return nil
}

// writeBitmap writes the clusters of bitmap data that have bits set, then
// the bitmap's table, and sets the entry's table offset.
func (s *streamImage) writeBitmap(e *bitmapDirEntry, data *image.DirtyBitmap) error {
	table := make([]byte, int64(e.tableSize)*8)
	buf := make([]byte, s.cs)
	for j := int64(0); j < int64(e.tableSize); j++ {
		if !data.AnyBytes(j*s.cs, s.cs) {
			continue
		}
		data.ReadBytes(buf, j*s.cs)
		off, err := s.appendClusters(buf)
		if err != nil {
			return err
		}
		be.PutUint64(table[j*8:], uint64(off))
	}
	off, err := s.appendClusters(table)
	if err != nil {
		return err
	}
	e.tableOffset = uint64(off)
	return nil
}

// appendClusters writes b into the next whole clusters and returns
// where.
func (s *streamImage) appendClusters(b []byte) (int64, error) {
	start := s.allocCluster()
	for n := s.cs; n < int64(len(b)); n += s.cs {
		s.allocCluster()
	}
	_, err := s.file.WriteAt(b, start)
	return start, err
}
