package vdi

import (
	"encoding/binary"

	"qimg/image"
)

// Layout constants of VDI 1.1 as qemu reads and writes it.
const (
	headerSize   = 512 // the header sector qemu reads and rewrites
	signature    = 0xbeda107f
	version11    = 0x00010001
	typeDynamic  = 1
	typeStatic   = 2
	sectorSize   = 512
	blockSize    = 1 << 20        // the only block size qemu accepts
	maxBlocks    = 0x7ffffe00 / 4 // the block map must fit one request (BDRV_REQUEST_MAX_BYTES)
	maxDiskSize  = uint64(maxBlocks) * blockSize
	unallocated  = 0xffffffff // never allocated: reads as zeroes
	discarded    = 0xfffffffe // discarded: reads as zeroes
	headerText   = "<<< QEMU VM Virtual Disk Image >>>\n"
	qemuHdrSize  = 0x180 // header_size qemu writes
	offDescr     = 0x54
	offBmapField = 0x154
)

// allocated reports whether a block map entry points at a data block.
func allocated(entry uint32) bool { return entry < discarded }

// header holds the fields of the VDI header qemu uses, in host order;
// raw keeps the whole sector so that rewriting it preserves the rest.
type header struct {
	raw             [headerSize]byte
	imageType       uint32
	offsetBmap      uint32
	offsetData      uint32
	sectorSize      uint32
	diskSize        uint64 // rounded up to whole sectors, as qemu does
	blockSize       uint32
	blocksInImage   uint32
	blocksAllocated uint32
}

var le = binary.LittleEndian

// parseHeader decodes and validates a header with qemu's checks and
// words, then checks that the block map lies inside the file before
// anything is allocated for it.
func parseHeader(b []byte, fileSize int64) (*header, error) {
	if len(b) < headerSize {
		return nil, image.Errorf(image.ErrWrongFormat, "Image not in VDI format (file too short)")
	}
	h := &header{}
	copy(h.raw[:], b)
	sig := le.Uint32(b[0x40:])
	ver := le.Uint32(b[0x44:])
	h.imageType = le.Uint32(b[0x4c:])
	h.offsetBmap = le.Uint32(b[0x154:])
	h.offsetData = le.Uint32(b[0x158:])
	h.sectorSize = le.Uint32(b[0x168:])
	h.diskSize = le.Uint64(b[0x170:])
	h.blockSize = le.Uint32(b[0x178:])
	h.blocksInImage = le.Uint32(b[0x180:])
	h.blocksAllocated = le.Uint32(b[0x184:])
	if h.diskSize > maxDiskSize {
		return nil, image.Errorf(image.ErrUnsupported, "Unsupported VDI image size (size is 0x%x, max supported is 0x%x)", h.diskSize, maxDiskSize)
	}
	h.diskSize = (h.diskSize + sectorSize - 1) &^ (sectorSize - 1)
	bmapRoom := uint64(h.blocksInImage) * uint64(h.blockSize)
	switch {
	case sig != signature:
		return nil, image.Errorf(image.ErrWrongFormat, "Image not in VDI format (bad signature %08x)", sig)
	case ver != version11:
		return nil, image.Errorf(image.ErrUnsupported, "unsupported VDI image (version %d.%d)", ver>>16, ver&0xffff)
	case h.offsetBmap%sectorSize != 0:
		return nil, image.Errorf(image.ErrUnsupported, "unsupported VDI image (unaligned block map offset 0x%x)", h.offsetBmap)
	case h.offsetData%sectorSize != 0:
		return nil, image.Errorf(image.ErrUnsupported, "unsupported VDI image (unaligned data offset 0x%x)", h.offsetData)
	case h.sectorSize != sectorSize:
		return nil, image.Errorf(image.ErrUnsupported, "unsupported VDI image (sector size %d is not %d)", h.sectorSize, sectorSize)
	case h.blockSize != blockSize:
		return nil, image.Errorf(image.ErrUnsupported, "unsupported VDI image (block size %d is not %d)", h.blockSize, blockSize)
	case h.diskSize > bmapRoom:
		return nil, image.Errorf(image.ErrUnsupported, "unsupported VDI image (disk size %d, image bitmap has room for %d)", h.diskSize, bmapRoom)
	case !isZero(b[0x1a8:0x1b8]):
		return nil, image.Errorf(image.ErrUnsupported, "unsupported VDI image (non-NULL link UUID)")
	case !isZero(b[0x1b8:0x1c8]):
		return nil, image.Errorf(image.ErrUnsupported, "unsupported VDI image (non-NULL parent UUID)")
	case h.blocksInImage > maxBlocks:
		return nil, image.Errorf(image.ErrUnsupported, "unsupported VDI image (too many blocks %d, max is %d)", h.blocksInImage, maxBlocks)
	}
	// qemu reads a block map past the end of the file as zeroes; such a
	// file is damaged, and refusing it bounds the allocation by the file.
	if int64(h.offsetBmap)+h.bmapBytes() > fileSize {
		return nil, image.Errorf(image.ErrCorrupt, "unsupported VDI image (block map of %d entries at 0x%x extends past the end of the file)", h.blocksInImage, h.offsetBmap)
	}
	return h, nil
}

// bmapBytes is the block map's size on disk, whole sectors.
func (h *header) bmapBytes() int64 {
	return (int64(h.blocksInImage)*4 + sectorSize - 1) &^ (sectorSize - 1)
}

// encode returns the header sector with the fields qemu updates.
func (h *header) encode() []byte {
	b := h.raw
	le.PutUint32(b[0x184:], h.blocksAllocated)
	le.PutUint64(b[0x170:], h.diskSize) // qemu rewrites it rounded up
	return b[:]
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
