// Package dmg is the read-only driver for Apple disk images (UDIF) as
// qemu 7.2 reads them: raw, zero and zlib chunks as qemu does, bzip2
// chunks too (which Debian's qemu-img, built without its dmg-bz2 module,
// cannot read), and lzfse chunks answered with qemu's warning and I/O
// error. Every size comes from the file and is bounded by it and by
// qemu's 64 MiB chunk limits before anything is allocated.
package dmg

import (
	"bytes"
	"errors"
	"sync"
	"syscall"

	"qimg/image"
)

func init() {
	// the placeholder's probe (qemu's dmg_probe, by file name) stays
	image.Register(&image.Format{Name: formatName, Open: Open})
}

// invalid is qemu's -EINVAL from dmg_open, which the block layer words
// as "Could not open" once more, the driver having no words of its own.
func invalid(filename string) error {
	return image.Errorf(syscall.EINVAL, "Could not open '%s': Invalid argument", filename)
}

// errInvalid is what the parsers return; Open turns it into invalid.
var errInvalid = errors.New("invalid dmg image")

// errIO answers reads of sectors no readable chunk maps.
var errIO = image.Errorf(syscall.EIO, "Input/output error")

// Image is an open dmg image.
type Image struct {
	file    *image.Node
	sectors int64
	chunks  []chunk

	mu      sync.Mutex // guards the decompressed chunk
	current int        // the chunk in buf; len(chunks) when none
	buf     []byte
}

// Open reads the trailer and the chunk tables as qemu's dmg_open.
func Open(o *image.OpenContext) (image.Driver, error) {
	d, err := open(o)
	if errors.Is(err, errInvalid) {
		return nil, invalid(o.Filename)
	}
	return d, err
}

func open(o *image.OpenContext) (image.Driver, error) {
	koly, err := findTrailer(o.File)
	if err != nil {
		return nil, err
	}
	t := make([]byte, trailerSize)
	if err := o.File.ReadPadded(t, koly); err != nil {
		return nil, err
	}
	p := &parser{file: o.File, dataFork: be.Uint64(t[kolyDataForkOffset:])}
	if p.dataFork > uint64(koly) {
		return nil, errInvalid
	}
	rsrcOff, rsrcLen := be.Uint64(t[kolyRsrcForkOffset:]), be.Uint64(t[kolyRsrcForkLength:])
	if rsrcOff >= uint64(koly) || rsrcLen > uint64(koly)-rsrcOff {
		return nil, errInvalid
	}
	xmlOff, xmlLen := be.Uint64(t[kolyXMLOffset:]), be.Uint64(t[kolyXMLLength:])
	if xmlOff >= uint64(koly) || xmlLen > uint64(koly)-xmlOff {
		return nil, errInvalid
	}
	sectors := int64(be.Uint64(t[kolySectorCount:]))
	if sectors < 0 {
		return nil, errInvalid
	}
	switch {
	case rsrcLen != 0:
		err = p.readResourceFork(rsrcOff, rsrcLen)
	case xmlLen != 0:
		err = p.readXML(xmlOff, xmlLen)
	default:
		err = errInvalid
	}
	if err != nil {
		return nil, err
	}
	if err := image.CheckSectorCount(uint64(sectors)); err != nil {
		return nil, err
	}
	return &Image{file: o.File, sectors: sectors, chunks: p.chunks, current: len(p.chunks)}, nil
}

// findTrailer finds "koly" in the last 515 bytes before the last 508 (the
// trailer may start in the second-last sector or in the first 4 bytes of
// the last), as qemu's dmg_find_koly_offset.
func findTrailer(f *image.Node) (int64, error) {
	size := f.Size()
	if size < trailerSize {
		return 0, image.Errorf(image.ErrWrongFormat, "dmg file must be at least 512 bytes long")
	}
	var off int64
	if size > 511+512 {
		off = size - 511 - 512
	}
	buf := make([]byte, min(size, 515))
	if err := f.ReadPadded(buf, off); err != nil {
		return 0, err
	}
	if i := bytes.Index(buf, []byte(kolyMagic)); i >= 0 {
		return off + int64(i), nil
	}
	return 0, image.Errorf(image.ErrWrongFormat, "Could not locate UDIF trailer in dmg file")
}

func (m *Image) Size() int64 { return m.sectors * sectorSize }

// ReadAt reads sector by sector through the chunk that maps each, as
// qemu's dmg_co_preadv; a sector no readable chunk maps fails with EIO.
func (m *Image) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		sector := uint64(pos / sectorSize)
		c, err := m.load(sector)
		if err != nil {
			return done, err
		}
		// the rest of this chunk, at most
		chunkEnd := int64(c.sector+c.sectors) * sectorSize
		if c.sector+c.sectors < c.sector || chunkEnd <= pos {
			chunkEnd = pos + sectorSize - pos%sectorSize
		}
		n := int(min(int64(len(p)-done), chunkEnd-pos))
		if c.zero() {
			clear(p[done : done+n])
		} else {
			in := pos - int64(c.sector)*sectorSize
			copyPadded(p[done:done+n], m.buf, in)
		}
		done += n
	}
	return done, nil
}

// copyPadded copies src[off:] into dst, zeroes where src ends.
func copyPadded(dst, src []byte, off int64) {
	k := 0
	if off < int64(len(src)) {
		k = copy(dst, src[off:])
	}
	clear(dst[k:])
}

// BlockStatus: qemu's dmg driver has no block status, so all of the
// image is data, at no fixed place in the file.
func (m *Image) BlockStatus(off, length int64) (image.Extent, error) {
	return image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: -1}, nil
}

func (m *Image) Close() error { return nil }

// InfoLess: qemu's dmg driver has no get_info, so info shows no dirty
// flag.
func (m *Image) InfoLess() {}
