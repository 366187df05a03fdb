package parallels

import (
	"encoding/binary"
	"math"

	"qimg/image"
)

// The on-disk layout, after qemu's docs/interop/parallels.txt and
// block/parallels.c (7.2): a 64-byte little-endian header, the block
// allocation table (BAT) right after it, and clusters of data.
const (
	formatName  = "parallels"
	headerSize  = 64
	magicOld    = "WithoutFreeSpace" // BAT entries count sectors
	magicExt    = "WithouFreSpacExt" // BAT entries count clusters
	version     = 2
	inUseMagic  = 0x746f6e59 // "Ynot": the image was not closed
	sectorSize  = 512
	notParallel = "Image not in Parallels format"

	// create's geometry, which nothing reads back (HEADS_NUMBER,
	// SEC_IN_CYL)
	createHeads     = 16
	createSecPerCyl = 32
	// DEFAULT_CLUSTER_SIZE
	defaultClusterSize = 1 << 20
	// MAX_PARALLELS_IMAGE_FACTOR: BAT entries are 32 bits wide
	maxImageFactor = 1 << 32
	// the largest file qimg grows an image to (qemu's BDRV_MAX_LENGTH)
	maxLength = math.MaxInt64 &^ (1<<30 - 1)
)

// Header field offsets.
const (
	offMagic      = 0
	offVersion    = 16
	offHeads      = 20
	offCylinders  = 24
	offTracks     = 28 // sectors per cluster
	offBatEntries = 32
	offSectors    = 36 // 64 bits; the old format uses the low 32
	offInUse      = 44
	offDataOff    = 48 // sectors; 0: right after the BAT
)

var le = binary.LittleEndian

// header holds the fields of the on-disk header the driver uses, and the
// 64 bytes as read so that rewriting it keeps what qimg does not use.
type header struct {
	raw        [headerSize]byte
	ext        bool   // "WithouFreSpacExt": BAT entries count clusters
	tracks     uint32 // sectors per cluster
	batEntries uint32
	sectors    uint64
	inUse      uint32
	dataOff    uint32
}

// parseHeader validates the header as qemu's parallels_open does, in its
// order and words.
func parseHeader(b []byte) (*header, error) {
	h := &header{}
	copy(h.raw[:], b)
	r := h.raw[:]
	magic := string(r[offMagic:offVersion])
	if le.Uint32(r[offVersion:]) != version || magic != magicOld && magic != magicExt {
		return nil, image.Errorf(image.ErrWrongFormat, notParallel)
	}
	h.ext = magic == magicExt
	h.tracks = le.Uint32(r[offTracks:])
	h.batEntries = le.Uint32(r[offBatEntries:])
	h.sectors = le.Uint64(r[offSectors:])
	h.inUse = le.Uint32(r[offInUse:])
	h.dataOff = le.Uint32(r[offDataOff:])
	if !h.ext {
		h.sectors &= math.MaxUint32
	}
	switch {
	case h.tracks == 0:
		return nil, image.Errorf(image.ErrCorrupt, "Invalid image: Zero sectors per track")
	case h.tracks > math.MaxInt32/513:
		return nil, image.Errorf(image.ErrCorrupt, "Invalid image: Too big cluster")
	case h.batEntries > math.MaxInt32/4:
		return nil, image.Errorf(image.ErrCorrupt, "Catalog too large")
	}
	return h, image.CheckSectorCount(h.sectors)
}

// batOffset is where BAT entry i lies in the file (qemu's bat_entry_off,
// 32 bits wide).
func batOffset(i uint32) uint32 { return headerSize + 4*i }

// setInUse stores the in-use word in the raw header.
func (h *header) setInUse(v uint32) {
	h.inUse = v
	le.PutUint32(h.raw[offInUse:], v)
}
