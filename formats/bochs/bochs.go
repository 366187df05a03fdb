// Package bochs is the read-only driver for Bochs "growing" redolog
// images: a catalog maps each extent of the disk to a block holding a
// sector bitmap followed by the extent's sectors.
package bochs

import (
	"encoding/binary"
	"math/bits"

	"qimg/image"
)

const (
	headerSize   = 512
	versionV2    = 0x00020000
	versionV1    = 0x00010000
	unallocated  = 0xffffffff
	maxCatalog   = 0x100000 // qemu's cap: what bximage needs for ~8 TB
	maxExtent    = 0x800000
	sectorSize   = 512
	magic        = "Bochs Virtual HD Image"
	redologType  = "Redolog"
	growingType  = "Growing"
	formatName   = "bochs"
	notBochsText = "Image not in Bochs format"
)

func init() {
	// the placeholder's probe (qemu's bochs_probe) stays
	image.Register(&image.Format{Name: formatName, Open: Open})
}

// header is the part of the 512-byte header the driver uses.
type header struct {
	version    uint32
	headerLen  uint32 // where the catalog starts
	catalog    uint32 // catalog entries
	bitmapLen  uint32 // bytes of each extent's sector bitmap
	extentSize uint32 // guest bytes per extent
	diskSize   uint64
}

// parseHeader decodes and validates a header with qemu's checks and
// words; it allocates nothing.
func parseHeader(b []byte) (*header, error) {
	if len(b) < headerSize || cString(b[:32]) != magic || cString(b[32:48]) != redologType ||
		cString(b[48:64]) != growingType {
		return nil, image.Errorf(image.ErrWrongFormat, notBochsText)
	}
	le := binary.LittleEndian
	h := &header{
		version:    le.Uint32(b[64:]),
		headerLen:  le.Uint32(b[68:]),
		catalog:    le.Uint32(b[72:]),
		bitmapLen:  le.Uint32(b[76:]),
		extentSize: le.Uint32(b[80:]),
	}
	switch h.version {
	case versionV2:
		h.diskSize = le.Uint64(b[88:])
	case versionV1: // no reserved word before the disk size
		h.diskSize = le.Uint64(b[84:])
	default:
		return nil, image.Errorf(image.ErrWrongFormat, notBochsText)
	}
	if h.catalog > maxCatalog {
		return nil, image.Errorf(image.ErrCorrupt, "Catalog size is too large")
	}
	switch {
	case h.extentSize < sectorSize:
		return nil, image.Errorf(image.ErrCorrupt, "Extent size must be at least 512")
	case bits.OnesCount32(h.extentSize) != 1:
		return nil, image.Errorf(image.ErrCorrupt, "Extent size %d is not a power of two", h.extentSize)
	case h.extentSize > maxExtent:
		return nil, image.Errorf(image.ErrCorrupt, "Extent size %d is too large", h.extentSize)
	}
	sectors := h.sectors()
	perExtent := int64(h.extentSize / sectorSize)
	if int64(h.catalog) < (sectors+perExtent-1)/perExtent {
		return nil, image.Errorf(image.ErrCorrupt, "Catalog size is too small for this disk size")
	}
	return h, nil
}

// sectors is the disk size in whole sectors, as qemu keeps it (int64).
func (h *header) sectors() int64 { return int64(h.diskSize / sectorSize) }

// blocks rounds a byte count up to sectors as qemu does, in 32 bits:
// a zero length wraps to a huge count, as in qemu.
func blocks(n uint32) uint32 { return 1 + (n-1)/sectorSize }

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Bochs is an open Bochs image.
type Bochs struct {
	file       *image.Node
	h          *header
	catalog    []uint32
	dataOffset uint64
	// stride is the sectors each catalog block takes: bitmap plus extent
	// (qemu adds them as ints, so the sum wraps in 32 bits).
	stride       uint32
	bitmapBlocks uint32
}

// Open reads the header and the catalog; a file shorter than the header
// reads as padded with zeroes, as in qemu. The catalog is at most 4 MiB
// (maxCatalog entries); parts of it past the end of the file read as
// zeroes, as qemu's reads do.
func Open(o *image.OpenContext) (image.Driver, error) {
	if o.Writable && !o.Check {
		return nil, image.Errorf(image.ErrReadOnly, "Image is read-only")
	}
	head := make([]byte, headerSize)
	if err := readPadded(o.File, head, 0); err != nil {
		return nil, err
	}
	h, err := parseHeader(head)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, 4*int(h.catalog))
	if err := readPadded(o.File, raw, int64(h.headerLen)); err != nil {
		return nil, err
	}
	cat := make([]uint32, h.catalog)
	for i := range cat {
		cat[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	bm := blocks(h.bitmapLen)
	return &Bochs{
		file:         o.File,
		h:            h,
		catalog:      cat,
		dataOffset:   uint64(h.headerLen) + 4*uint64(h.catalog),
		stride:       bm + blocks(h.extentSize),
		bitmapBlocks: bm,
	}, nil
}

// readPadded reads p at off from the file; what lies past its end reads
// as zeroes.
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

// readFar reads at an offset computed from catalog entries, which may
// lie anywhere in 64 bits; qemu's block layer refuses such reads with EIO.
func readFar(f *image.Node, p []byte, off uint64) error {
	if off > 1<<62 {
		return errIO
	}
	return readPadded(f, p, int64(off))
}

func (b *Bochs) Size() int64 { return b.h.sectors() * sectorSize }

// sectorOffset is where guest sector s lives in the file, 0 when it is
// not allocated (its extent has no block or its bitmap bit is clear).
func (b *Bochs) sectorOffset(s int64) (uint64, error) {
	off := uint64(s) * sectorSize
	ext := off / uint64(b.h.extentSize)
	inExt := (off % uint64(b.h.extentSize)) / sectorSize
	if b.catalog[ext] == unallocated {
		return 0, nil
	}
	bitmapOff := b.dataOffset + sectorSize*uint64(b.catalog[ext])*uint64(b.stride)
	var bit [1]byte
	if err := readFar(b.file, bit[:], bitmapOff+inExt/8); err != nil {
		return 0, err
	}
	if bit[0]>>(inExt%8)&1 == 0 {
		return 0, nil
	}
	return bitmapOff + sectorSize*(uint64(b.bitmapBlocks)+inExt), nil
}

// ReadAt reads sector by sector, as the format maps each sector on its own.
func (b *Bochs) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	var sector [sectorSize]byte
	for done < len(p) {
		pos := off + int64(done)
		s := pos / sectorSize
		in := int(pos % sectorSize)
		n := min(sectorSize-in, len(p)-done)
		at, err := b.sectorOffset(s)
		if err != nil {
			return done, err
		}
		if at == 0 {
			clear(p[done : done+n])
		} else {
			if err := readFar(b.file, sector[:], at); err != nil {
				return done, err
			}
			copy(p[done:done+n], sector[in:])
		}
		done += n
	}
	return done, nil
}

// BlockStatus: qemu's bochs driver has no block status, so everything
// reads as data without a fixed place.
func (b *Bochs) BlockStatus(off, length int64) (image.Extent, error) {
	return image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: -1}, nil
}

func (b *Bochs) Close() error { return nil }

// InfoLess: qemu's bochs driver has no get_info, so info shows no dirty flag.
func (b *Bochs) InfoLess() {}

// errIO is qemu's EIO as qemu-img words it.
var errIO = image.Errorf(image.ErrCorrupt, "Input/output error")
