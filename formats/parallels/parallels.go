// Package parallels is the driver for Parallels disk images as qemu 7.2
// reads and writes them: a 64-byte header, a block allocation table
// (BAT) of 32-bit cluster offsets, and the clusters, allocated at the end
// of the file as they are first written. An image open for writing
// carries an in-use mark in its header until it is closed.
package parallels

import (
	"sync"

	"qimg/image"
)

func init() {
	// the placeholder's probe (qemu's parallels_probe) stays
	image.Register(&image.Format{
		Name:          formatName,
		Open:          Open,
		CreateOptions: createOptions,
		CheckCreate:   checkCreate,
		Create:        Create,
	})
}

// Parallels is an open Parallels image.
type Parallels struct {
	file     *image.Node
	filename string
	h        *header

	mu          sync.RWMutex // guards bat, dataEnd, dirty and unclean
	bat         []uint32     // the entries inside the file; later ones are 0
	clusterSize int64
	// multiplier turns a BAT entry into sectors: the cluster's sectors
	// for the extended format, 1 for the old one.
	multiplier int64
	// dataEnd is the sector where the next cluster goes (qemu's
	// data_end); the file is cut there when a writer closes it.
	dataEnd int64
	// unclean: the image carried the in-use mark when it was opened
	// (qemu's header_unclean), which check reports.
	unclean bool

	writable   bool
	prealloc   preallocation
	dirtyFirst int64 // BAT entries to write back, -1 when none
	dirtyLast  int64
}

// Open reads the header and the BAT. The BAT is read only as far as the
// file goes (the rest reads as zeroes, unallocated), so memory follows
// the file's real size. An image opened for writing gets the in-use
// mark, as qemu marks it.
func Open(o *image.OpenContext) (image.Driver, error) {
	head := make([]byte, headerSize)
	if err := o.File.ReadPadded(head, 0); err != nil {
		return nil, err
	}
	h, err := parseHeader(head)
	if err != nil {
		return nil, err
	}
	p := &Parallels{
		file: o.File, filename: o.Filename, h: h,
		clusterSize: int64(h.tracks) * sectorSize, multiplier: 1,
		unclean: h.inUse == inUseMagic, dirtyFirst: -1,
	}
	if h.ext {
		p.multiplier = int64(h.tracks)
	}
	if err := p.readBAT(); err != nil {
		return nil, err
	}
	p.dataEnd = p.initialDataEnd()
	if p.prealloc, err = parsePrealloc(o.Options, int64(h.tracks)); err != nil {
		return nil, err
	}
	if o.Writable {
		if p.unclean && !o.Check {
			return nil, image.Errorf(nil, "parallels: Image was not closed correctly; cannot be opened read/write")
		}
		if err := p.markInUse(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// readBAT reads the entries that lie inside the file.
func (p *Parallels) readBAT() error {
	inFile := min(int64(p.h.batEntries), max(0, (p.file.Size()-headerSize+3)/4))
	raw := make([]byte, 4*inFile)
	if err := p.file.ReadPadded(raw, headerSize); err != nil {
		return err
	}
	p.bat = make([]uint32, inFile)
	for i := range p.bat {
		p.bat[i] = le.Uint32(raw[4*i:])
	}
	return nil
}

// initialDataEnd is qemu's data_end after open: the header's data offset
// or, when that is 0, the end of the BAT rounded up to a sector (a byte
// count that qemu then takes for sectors, kept for identical files),
// raised past the last cluster the BAT points at.
func (p *Parallels) initialDataEnd() int64 {
	end := int64(p.h.dataOff)
	if end == 0 {
		end = (int64(batOffset(p.h.batEntries)) + sectorSize - 1) &^ (sectorSize - 1)
	}
	for i := range p.bat {
		if off := p.entrySector(i); off >= end {
			end = off + int64(p.h.tracks)
		}
	}
	return end
}

// entrySector is where BAT entry i points, in sectors (0: unallocated).
func (p *Parallels) entrySector(i int) int64 { return int64(p.bat[i]) * p.multiplier }

func (p *Parallels) Size() int64 { return int64(p.h.sectors) * sectorSize }

// hostOffset is where the cluster of guest offset off starts in the file,
// 0 when it is not allocated. The caller holds mu.
func (p *Parallels) hostOffset(off int64) int64 {
	i := off / p.clusterSize
	if i >= int64(len(p.bat)) || p.bat[i] == 0 {
		return 0
	}
	return p.entrySector(int(i)) * sectorSize
}

func (p *Parallels) ReadAt(b []byte, off int64) (int, error) {
	done := 0
	for done < len(b) {
		pos := off + int64(done)
		in := pos % p.clusterSize
		n := int(min(int64(len(b)-done), p.clusterSize-in))
		p.mu.RLock()
		host := p.hostOffset(pos)
		p.mu.RUnlock()
		if host == 0 {
			clear(b[done : done+n])
		} else if err := p.file.ReadPadded(b[done:done+n], host+in); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// BlockStatus reports runs of clusters that are all allocated, contiguous
// in the file, or all unallocated (reading as zeroes).
func (p *Parallels) BlockStatus(off, length int64) (image.Extent, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	host := p.hostOffset(off)
	e := image.Extent{Offset: off, Length: p.runLength(off, min(length, p.Size()-off)), HostOffset: -1}
	if host == 0 {
		e.Zero = true
		return e, nil
	}
	e.Allocated, e.Data = true, true
	e.HostOffset = host + off%p.clusterSize
	return e, nil
}

// runLength is how far from off (at most length bytes) the clusters stay
// all unallocated or allocated and contiguous in the file (qemu's
// block_status). The caller holds mu.
func (p *Parallels) runLength(off, length int64) int64 {
	start := p.hostOffset(off)
	base := off - off%p.clusterSize // the first cluster's guest offset
	n := min(length, p.clusterSize-off%p.clusterSize)
	for n < length {
		next := off + n
		if start == 0 && next/p.clusterSize >= int64(len(p.bat)) {
			// past the BAT's entries in the file: all unallocated
			return length
		}
		host := p.hostOffset(next)
		if start == 0 && host != 0 || start != 0 && host != start+(next-base) {
			break
		}
		n += min(length-n, p.clusterSize)
	}
	return n
}

// InfoLess: qemu's parallels driver has no get_info, so info shows no
// dirty flag.
func (p *Parallels) InfoLess() {}
