package vmdk

import (
	"encoding/binary"
	"slices"
	"sync"

	"qimg/image"
)

// A streamOptimized image written onto a write-once node (an S3 upload)
// in file order, as VMware's stream format lays it out: the header (its
// grain directory "at the end") and the descriptor, then every grain
// deflated behind its marker in the order the data comes, then the grain
// tables that have entries, each behind a marker, the grain directory
// behind its marker, the footer (the header with the directory's place)
// behind its marker, and the end-of-stream marker. qemu and qimg read the
// footer of such a file; the grain tables are kept in memory until the
// end (4 bytes a grain).

// Stream markers ("Stream-Optimized Compressed Sparse Extents").
const (
	markerEOS    = 0
	markerGT     = 1
	markerGD     = 2
	markerFooter = 3
)

// Layout of the images qimg writes in file order, as qemu creates them.
const (
	streamGranularity = 128 // sectors a grain: 64 KiB
	streamGTEntries   = 512
	streamDescSectors = 20
)

// inOrder: only a streamOptimized image without a backing file is laid
// out in file order; the other subformats place grain tables before the
// grains or write extents of their own.
func inOrder(o image.Options) error {
	p, err := createParamsOf(o, 0)
	if err != nil {
		return err
	}
	switch {
	case !p.compressed():
		return image.Errorf(image.ErrUnsupported, "vmdk images of subformat %s cannot be written to S3, where objects are written once, in order; "+
			"subformat=streamOptimized can", p.subformat)
	case p.backing != "":
		return image.Errorf(image.ErrUnsupported, "vmdk images with a backing file cannot be written to S3 yet, where objects are written once, in order")
	}
	return nil
}

// streamHeader is the sparse header of an image written in file order;
// gdOffset is gdAtEnd in the header, the directory's sector in the footer.
func streamHeader(capacity, gdOffset uint64) []byte {
	h := make([]byte, sectorSize)
	le := binary.LittleEndian
	copy(h, magicKDMV)
	le.PutUint32(h[4:], 3)
	le.PutUint32(h[8:], 1|1<<16|flagMarker)
	le.PutUint64(h[12:], capacity)
	le.PutUint64(h[20:], streamGranularity)
	le.PutUint64(h[28:], 1)
	le.PutUint64(h[36:], streamDescSectors)
	le.PutUint32(h[44:], streamGTEntries)
	le.PutUint64(h[56:], gdOffset)
	le.PutUint64(h[64:], streamGrainOffset)
	copy(h[73:], "\n \r\n")
	le.PutUint16(h[77:], compressZlib)
	return h
}

// streamGrainOffset is where the grains start: after the header and the
// descriptor, on a grain boundary, as qemu places them.
const streamGrainOffset = (1 + streamDescSectors + streamGranularity - 1) / streamGranularity * streamGranularity

// createInOrder writes the header and the descriptor onto a write-once
// node, sized first for the largest image so that the upload's parts are
// large enough. A create alone completes the empty image at once.
func createInOrder(c *image.CreateContext, p createParams, desc string) error {
	if err := inOrder(c.Options); err != nil {
		return err
	}
	capacity := uint64(p.size / sectorSize)
	s := &streamImage{file: c.File, size: p.size, next: streamGrainOffset * sectorSize, tables: map[int64][]uint32{}}
	if err := c.File.Truncate(s.bound(), image.PreallocOff); err != nil {
		return err
	}
	if _, err := c.File.WriteAt(streamHeader(capacity, gdAtEnd), 0); err != nil {
		return err
	}
	buf := make([]byte, (len(desc)+sectorSize-1)&^(sectorSize-1))
	copy(buf, desc)
	if _, err := c.File.WriteAt(buf, sectorSize); err != nil {
		return err
	}
	if !c.Continued {
		return s.finish()
	}
	return nil
}

// streamImage is a streamOptimized image being written in file order.
type streamImage struct {
	file *image.Node
	size int64

	mu      sync.Mutex
	next    int64              // where the next grain's marker goes
	tables  map[int64][]uint32 // grain tables by directory index
	pending *pendingGrain      // a grain written uncompressed, in parts
	done    bool
}

// openInOrder opens the image create just started on a write-once node.
func openInOrder(file *image.Node) (*streamImage, error) {
	head := make([]byte, sectorSize)
	if _, err := file.ReadAt(head, 0); err != nil {
		return nil, err
	}
	h := parseHeader4(head)
	if string(head[:4]) != magicKDMV || h.gdOffset != gdAtEnd || h.granularity != streamGranularity {
		return nil, image.Errorf(image.ErrUnsupported, "this vmdk image cannot be written to S3")
	}
	return &streamImage{file: file, size: int64(h.capacity) * sectorSize, next: streamGrainOffset * sectorSize,
		tables: map[int64][]uint32{}}, nil
}

func (s *streamImage) grains() int64 {
	return (s.size + streamGranularity*sectorSize - 1) / (streamGranularity * sectorSize)
}

func (s *streamImage) gtCount() int64 { return (s.grains() + streamGTEntries - 1) / streamGTEntries }

// bound is the largest file: every grain stored whole (deflate may add a
// little to data it cannot shrink) behind its marker, every grain table.
func (s *streamImage) bound() int64 {
	const grain = streamGranularity * sectorSize
	gdSectors := (s.gtCount()*4 + sectorSize - 1) / sectorSize
	return streamGrainOffset*sectorSize + s.grains()*(grain+2*sectorSize) +
		s.gtCount()*(1+streamGTEntries*4/sectorSize)*sectorSize + (1+gdSectors+3)*sectorSize
}

func (s *streamImage) Size() int64 { return s.size }

// Close leaves the node's storage to its own close: an upload not
// completed is dropped.
func (s *streamImage) Close() error { return nil }

// CompressedOnly: grains are stored deflated.
func (s *streamImage) CompressedOnly() bool { return true }

// CompressedClusterSize is one grain.
func (s *streamImage) CompressedClusterSize() int64 { return streamGranularity * sectorSize }

// CompressCluster deflates one grain as a streamOptimized grain is
// stored, even when that is no smaller.
func (s *streamImage) CompressCluster(dst, src []byte) ([]byte, error) {
	return deflateGrain(dst, src)
}

// WriteCompressed appends one deflated grain behind its marker.
func (s *streamImage) WriteCompressed(off int64, compressed []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.flushPending(); err != nil {
		return err
	}
	return s.appendGrain(off, compressed)
}

// WriteAt gathers the parts of a grain written uncompressed, deflating
// and appending it once the writes move past it.
func (s *streamImage) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	const grain = streamGranularity * sectorSize
	done := 0
	for done < len(p) {
		start := off - off%grain
		if pg := s.pending; pg == nil || pg.off != start {
			if err := s.flushPending(); err != nil {
				return done, err
			}
			s.pending = &pendingGrain{off: start, data: make([]byte, min(grain, s.size-start))}
		}
		n := copy(s.pending.data[off-start:], p[done:])
		done += n
		off += int64(n)
	}
	return done, nil
}

// WriteZeroes: grains never written read as zeroes; a pending one holds
// zeroes where it was not written.
func (s *streamImage) WriteZeroes(off, length int64, _ bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pg := s.pending; pg != nil && off < pg.off+int64(len(pg.data)) && off+length > pg.off {
		from, to := max(off, pg.off), min(off+length, pg.off+int64(len(pg.data)))
		clear(pg.data[from-pg.off : to-pg.off])
	}
	return nil
}

func (s *streamImage) flushPending() error {
	pg := s.pending
	if pg == nil {
		return nil
	}
	s.pending = nil
	full := make([]byte, streamGranularity*sectorSize)
	copy(full, pg.data)
	compressed, err := deflateGrain(nil, full)
	if err != nil {
		return err
	}
	return s.appendGrain(pg.off, compressed)
}

// appendGrain writes a grain's marker (its first sector, its size) and
// deflated data after the last one, padded to a sector, and enters it
// in its grain table.
func (s *streamImage) appendGrain(off int64, compressed []byte) error {
	if s.done {
		return image.ErrReadOnly
	}
	const grain = streamGranularity * sectorSize
	if off%grain != 0 || off >= s.size {
		return image.Errorf(image.ErrUnsupported, "compressed grain at %d", off)
	}
	index := off / grain
	t := s.tables[index/streamGTEntries]
	if t == nil {
		t = make([]uint32, streamGTEntries)
		s.tables[index/streamGTEntries] = t
	}
	if t[index%streamGTEntries] != 0 {
		return image.Errorf(image.ErrUnsupported, "Could not write to allocated cluster for streamOptimized")
	}
	record := make([]byte, (12+len(compressed)+sectorSize-1)&^(sectorSize-1))
	binary.LittleEndian.PutUint64(record, uint64(off/sectorSize))
	binary.LittleEndian.PutUint32(record[8:], uint32(len(compressed)))
	copy(record[12:], compressed)
	if _, err := s.file.WriteAt(record, s.next); err != nil {
		return err
	}
	t[index%streamGTEntries] = uint32(s.next / sectorSize)
	s.next += int64(len(record))
	return nil
}

// ReadAt: only grains never written can be read back, as zeroes.
func (s *streamImage) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	const grain = streamGranularity * sectorSize
	for g := off / grain; g*grain < off+int64(len(p)); g++ {
		if t := s.tables[g/streamGTEntries]; t != nil && t[g%streamGTEntries] != 0 {
			return 0, image.Errorf(image.ErrUnsupported, "a vmdk image being written to S3 cannot be read back")
		}
	}
	clear(p)
	return len(p), nil
}

// BlockStatus: grains written are data, the others zeroes.
func (s *streamImage) BlockStatus(off, length int64) (image.Extent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	const grain = streamGranularity * sectorSize
	g := off / grain
	ext := image.Extent{Offset: off, Length: min(length, (g+1)*grain-off), HostOffset: -1, Zero: true}
	if t := s.tables[g/streamGTEntries]; t != nil && t[g%streamGTEntries] != 0 {
		ext.Allocated, ext.Data, ext.Zero = true, true, false
	}
	return ext, nil
}

// Info: the grain is the unit of allocation.
func (s *streamImage) Info(info *image.Info) error {
	info.ClusterSize = streamGranularity * sectorSize
	return nil
}

// Complete appends the tables, the directory, the footer and the
// end-of-stream marker, then completes the node's storage: only now does
// the image appear.
func (s *streamImage) Complete() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		if err := s.flushPending(); err != nil {
			return err
		}
		if err := s.finish(); err != nil {
			return err
		}
	}
	return s.file.Complete()
}

// finish writes what follows the grains, in file order, and sizes the
// node to its end.
func (s *streamImage) finish() error {
	s.done = true
	gd := make([]byte, (s.gtCount()*4+sectorSize-1)&^(sectorSize-1))
	idx := make([]int64, 0, len(s.tables))
	for i := range s.tables {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	const gtSectors = streamGTEntries * 4 / sectorSize
	for _, i := range idx {
		gt := make([]byte, gtSectors*sectorSize)
		for j, v := range s.tables[i] {
			binary.LittleEndian.PutUint32(gt[j*4:], v)
		}
		if err := s.appendMarked(markerGT, gtSectors, gt); err != nil {
			return err
		}
		binary.LittleEndian.PutUint32(gd[i*4:], uint32(s.next/sectorSize-gtSectors))
	}
	if err := s.appendMarked(markerGD, uint64(len(gd)/sectorSize), gd); err != nil {
		return err
	}
	gdOffset := uint64(s.next-int64(len(gd))) / sectorSize
	footer := streamHeader(uint64(s.size/sectorSize), gdOffset)
	if err := s.appendMarked(markerFooter, 1, footer); err != nil {
		return err
	}
	if err := s.appendMarked(markerEOS, 0, nil); err != nil {
		return err
	}
	return s.file.Truncate(s.next, image.PreallocOff)
}

// appendMarked writes a metadata marker (the sectors of what follows, its
// type) and what follows it.
func (s *streamImage) appendMarked(typ uint32, sectors uint64, data []byte) error {
	b := make([]byte, sectorSize+len(data))
	binary.LittleEndian.PutUint64(b, sectors)
	binary.LittleEndian.PutUint32(b[12:], typ)
	copy(b[sectorSize:], data)
	if _, err := s.file.WriteAt(b, s.next); err != nil {
		return err
	}
	s.next += int64(len(b))
	return nil
}
