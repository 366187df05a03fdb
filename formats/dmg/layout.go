package dmg

import "encoding/binary"

// The UDIF layout as qemu 7.2's block/dmg.c reads it: a 512-byte "koly"
// trailer near the end of the file points at a resource fork or an XML
// property list; either holds "mish" blocks, each a table of chunks that
// map runs of guest sectors to raw, zero or compressed data in the data
// fork. All fields are big-endian.
const (
	formatName  = "dmg"
	sectorSize  = 512
	trailerSize = 512
	kolyMagic   = "koly"
	mishMagic   = 0x6d697368 // "mish"

	// koly trailer fields
	kolyDataForkOffset = 0x18
	kolyRsrcForkOffset = 0x28
	kolyRsrcForkLength = 0x30
	kolyXMLOffset      = 0xd8
	kolyXMLLength      = 0xe0
	kolySectorCount    = 0x1ec

	// mish block fields
	mishSectorNumber = 0x08
	mishDataOffset   = 0x18
	mishChunks       = 204 // the first chunk entry
	mishMinSize      = 244 // header and one entry
	chunkEntrySize   = 40

	// qemu's bounds: no chunk's data or sectors beyond 64 MiB (what one
	// decompression may produce), no XML beyond 16 MiB
	maxChunkLength  = 64 << 20
	maxChunkSectors = maxChunkLength / sectorSize
	maxXMLLength    = 16 << 20
)

// Chunk types.
const (
	chunkZero    = 0x00000000 // UDZE
	chunkRaw     = 0x00000001 // UDRW
	chunkIgnore  = 0x00000002 // UDIG, reads as zeroes
	chunkADC     = 0x80000004 // UDCO, which qemu does not read
	chunkZlib    = 0x80000005 // UDZO
	chunkBzip2   = 0x80000006 // UDBZ
	chunkLzfse   = 0x80000007 // ULFO
	chunkComment = 0x7ffffffe // UDCM
	chunkLast    = 0xffffffff // UDLE
)

var be = binary.BigEndian

// chunk maps sectors [sector, sector+sectors) of the guest to length
// bytes at offset in the file.
type chunk struct {
	typ     uint32
	sector  uint64
	sectors uint64
	offset  uint64
	length  uint64
}

// zero reports whether the chunk reads as zeroes without data.
func (c *chunk) zero() bool { return c.typ == chunkZero || c.typ == chunkIgnore }
