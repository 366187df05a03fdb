// Package parallels is the driver for Parallels disk images: a 64-byte
// header, a block allocation table (BAT) of 32-bit cluster offsets, and
// the clusters. This layer reads; writing, creating and checking are not
// supported yet and answer so.
package parallels

import (
	"encoding/binary"
	"math"

	"qimg/image"
)

const (
	formatName  = "parallels"
	headerSize  = 64
	magicOld    = "WithoutFreeSpace"
	magicExt    = "WithouFreSpacExt"
	version     = 2
	inUseMagic  = 0x746f6e59
	sectorSize  = 512
	notParallel = "Image not in Parallels format"
)

func init() {
	// the placeholder's probe (qemu's parallels_probe) stays
	image.Register(&image.Format{Name: formatName, Open: Open})
}

// header holds the fields of the on-disk header the reader uses.
type header struct {
	ext        bool   // "WithouFreSpacExt": BAT entries count clusters, not sectors
	tracks     uint32 // sectors per cluster
	batEntries uint32
	sectors    uint64
	inUse      uint32
	dataOff    uint32
}

func parseHeader(b []byte) (*header, error) {
	if len(b) < headerSize {
		return nil, image.Errorf(image.ErrWrongFormat, notParallel)
	}
	le := binary.LittleEndian
	magic := string(b[:16])
	if magic != magicOld && magic != magicExt || le.Uint32(b[16:]) != version {
		return nil, image.Errorf(image.ErrWrongFormat, notParallel)
	}
	h := &header{
		ext:        magic == magicExt,
		tracks:     le.Uint32(b[28:]),
		batEntries: le.Uint32(b[32:]),
		sectors:    le.Uint64(b[36:]),
		inUse:      le.Uint32(b[44:]),
		dataOff:    le.Uint32(b[48:]),
	}
	if !h.ext {
		h.sectors &= 0xffffffff
	}
	switch {
	case h.tracks == 0:
		return nil, image.Errorf(image.ErrCorrupt, "Invalid image: Zero sectors per track")
	case h.tracks > math.MaxInt32/513:
		return nil, image.Errorf(image.ErrCorrupt, "Invalid image: Too big cluster")
	case h.batEntries > math.MaxInt32/4:
		return nil, image.Errorf(image.ErrCorrupt, "Catalog too large")
	}
	return h, nil
}

// Parallels is an open Parallels image.
type Parallels struct {
	file        *image.Node
	h           *header
	bat         []uint32
	clusterSize int64
	// multiplier turns a BAT entry into sectors: the cluster's sectors
	// for the extended format, 1 for the old one.
	multiplier int64
}

// Open reads the header and the BAT. The BAT is read only as far as the
// file goes (the rest reads as zeroes, unallocated), so memory follows
// the file's real size.
func Open(o *image.OpenContext) (image.Driver, error) {
	head := make([]byte, headerSize)
	if err := readPadded(o.File, head, 0); err != nil {
		return nil, err
	}
	h, err := parseHeader(head)
	if err != nil {
		return nil, err
	}
	if o.Writable {
		return nil, image.NotSupported("writing parallels images")
	}
	p := &Parallels{file: o.File, h: h, clusterSize: int64(h.tracks) * sectorSize, multiplier: 1}
	if h.ext {
		p.multiplier = int64(h.tracks)
	}
	inFile := min(int64(h.batEntries), max(0, (o.File.Size()-headerSize+3)/4))
	raw := make([]byte, 4*inFile)
	if err := readPadded(o.File, raw, headerSize); err != nil {
		return nil, err
	}
	p.bat = make([]uint32, inFile)
	for i := range p.bat {
		p.bat[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	return p, nil
}

// readPadded reads p at off; what lies past the file's end reads as zeroes.
func readPadded(f *image.Node, p []byte, off int64) error {
	clear(p)
	size := f.Size()
	if off >= size || len(p) == 0 {
		return nil
	}
	n := min(int64(len(p)), size-off)
	_, err := f.ReadAt(p[:n], off)
	return err
}

func (p *Parallels) Size() int64 { return int64(p.h.sectors) * sectorSize }

// hostOffset is where the cluster of guest offset off starts in the file,
// 0 when it is not allocated.
func (p *Parallels) hostOffset(off int64) int64 {
	i := off / p.clusterSize
	if i >= int64(len(p.bat)) || p.bat[i] == 0 {
		return 0
	}
	return int64(p.bat[i]) * p.multiplier * sectorSize
}

func (p *Parallels) ReadAt(b []byte, off int64) (int, error) {
	done := 0
	for done < len(b) {
		pos := off + int64(done)
		in := pos % p.clusterSize
		n := int(min(int64(len(b)-done), p.clusterSize-in))
		if host := p.hostOffset(pos); host == 0 {
			clear(b[done : done+n])
		} else if err := readPadded(p.file, b[done:done+n], host+in); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// BlockStatus reports runs of clusters that are all allocated, contiguous
// in the file, or all unallocated (reading as zeroes).
func (p *Parallels) BlockStatus(off, length int64) (image.Extent, error) {
	end := min(off+length, p.Size())
	host := p.hostOffset(off)
	pos := (off/p.clusterSize + 1) * p.clusterSize
	for pos < end {
		next := p.hostOffset(pos)
		if host == 0 && next != 0 || host != 0 && next != host+(pos-off/p.clusterSize*p.clusterSize) {
			break
		}
		pos += p.clusterSize
	}
	e := image.Extent{Offset: off, Length: min(pos, end) - off, HostOffset: -1}
	if host == 0 {
		e.Zero = true
		return e, nil
	}
	e.Allocated, e.Data = true, true
	e.HostOffset = host + off%p.clusterSize
	return e, nil
}

func (p *Parallels) Close() error { return nil }

// InfoLess: qemu's parallels driver has no get_info, so info shows no
// dirty flag.
func (p *Parallels) InfoLess() {}
