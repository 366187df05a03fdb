package vhdx

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"math/bits"
	"syscall"
)

var le = binary.LittleEndian

// Fixed places and sizes of the MS-VHDX header section.
const (
	header1Offset     = 64 << 10
	header2Offset     = 128 << 10
	headerSize        = 4 << 10 // the header checksum covers this much
	regionTableOffset = 192 << 10
	regionTableSize   = 64 << 10 // the region table checksum covers this much
	metadataTableSize = 64 << 10 // VHDX_METADATA_TABLE_MAX_SIZE
	maxRegionEntries  = 2047

	blockSizeMin = 1 << 20
	blockSizeMax = 256 << 20
	// maxSectorsPerBlock fixes the chunk ratio: how many payload blocks
	// share one sector bitmap block.
	maxSectorsPerBlock = 1 << 23
)

// BAT entry states (the low three bits) and the file offset mask.
const (
	batStateMask       = 7
	batFileOffsetMask  = 0xFFFFFFFFFFF00000
	blockNotPresent    = 0
	blockUndefined     = 1
	blockZero          = 2
	blockUnmapped      = 3
	blockUnmappedV095  = 5
	blockFullyPresent  = 6
	blockPartiallyPres = 7
)

// guid is an MS GUID as stored: the first three fields little-endian.
type guid [16]byte

func mustGUID(d1 uint32, d2, d3 uint16, d4 [8]byte) guid {
	var g guid
	le.PutUint32(g[0:], d1)
	le.PutUint16(g[4:], d2)
	le.PutUint16(g[6:], d3)
	copy(g[8:], d4[:])
	return g
}

var (
	batGUID           = mustGUID(0x2dc27766, 0xf623, 0x4200, [8]byte{0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08})
	metadataGUID      = mustGUID(0x8b7ca206, 0x4790, 0x4b9a, [8]byte{0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e})
	fileParamGUID     = mustGUID(0xcaa16737, 0xfa36, 0x4d43, [8]byte{0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b})
	virtualSizeGUID   = mustGUID(0x2fa54224, 0xcd1b, 0x4876, [8]byte{0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8})
	page83GUID        = mustGUID(0xbeca12ab, 0xb2e6, 0x4523, [8]byte{0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46})
	logicalSectorGUID = mustGUID(0x8141bf1d, 0xa96f, 0x4709, [8]byte{0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f})
	physSectorGUID    = mustGUID(0xcda348c7, 0x445d, 0x4471, [8]byte{0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56})
	parentLocatorGUID = mustGUID(0xa8d35f2d, 0xb30b, 0x454d, [8]byte{0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c})
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the checksum of a structure whose checksum field (at 4) is
// zero.
func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// checksumValid verifies a CRC-32C stored at crcOff, computed over buf
// with the checksum field taken as zero.
func checksumValid(buf []byte, crcOff int) bool {
	want := le.Uint32(buf[crcOff:])
	h := crc32.New(castagnoli)
	h.Write(buf[:crcOff])
	h.Write([]byte{0, 0, 0, 0})
	h.Write(buf[crcOff+4:])
	return h.Sum32() == want
}

// header is the VHDX header (the fields qimg uses).
type header struct {
	seq           uint64
	fileWriteGUID guid
	dataWriteGUID guid
	logGUID       guid
	logVersion    uint16
	version       uint16
	logLength     uint32
	logOffset     uint64
}

// headerOffsets are where the two headers lie.
var headerOffsets = [2]uint64{header1Offset, header2Offset}

// parseHeader decodes a header that is valid: its checksum, signature and
// version.
func parseHeader(buf []byte) (*header, bool) {
	if !checksumValid(buf, 4) || string(buf[:4]) != "head" {
		return nil, false
	}
	h := decodeHeader(buf)
	if h.version != 1 {
		return nil, false
	}
	return h, true
}

// decodeHeader decodes a header's fields whether it is valid or not.
func decodeHeader(buf []byte) *header {
	h := &header{
		seq:        le.Uint64(buf[8:]),
		logVersion: le.Uint16(buf[64:]),
		version:    le.Uint16(buf[66:]),
		logLength:  le.Uint32(buf[68:]),
		logOffset:  le.Uint64(buf[72:]),
	}
	copy(h.fileWriteGUID[:], buf[16:])
	copy(h.dataWriteGUID[:], buf[32:])
	copy(h.logGUID[:], buf[48:])
	return h
}

// region is a byte range of the file that metadata claims; payload blocks
// must not overlap them.
type region struct{ start, end uint64 }

type regions []region

func (rs regions) overlaps(start, length uint64) bool {
	_, bad := rs.overlapping(start, length)
	return bad
}

// overlapping returns the first region [start, start+length) overlaps.
func (rs regions) overlapping(start, length uint64) (region, bool) {
	end := start + length
	for _, r := range rs {
		if !(start >= r.end || end <= r.start) {
			return r, true
		}
	}
	return region{}, false
}

// readAt reads exactly len(p) bytes; bytes past the end of the file read
// as zeroes, as QEMU's file protocol returns them.
type readerAt interface {
	ReadAt(p []byte, off int64) (int, error)
}

func readFull(r readerAt, size int64, p []byte, off int64) error {
	clear(p)
	if off >= size {
		return nil
	}
	n := min(int64(len(p)), size-off)
	_, err := r.ReadAt(p[:n], off)
	if err == io.EOF {
		err = nil
	}
	return err
}

// selectHeader reads both headers and picks the current one as QEMU does:
// the valid one, or of two valid ones the higher sequence number; two
// identical headers (Disk2VHD writes them) count as one.
func selectHeader(r readerAt, size int64) (*header, int, error) {
	var bufs [2][headerSize]byte
	var hs [2]*header
	for i, off := range []int64{header1Offset, header2Offset} {
		if err := readFull(r, size, bufs[i][:], off); err != nil {
			return nil, 0, err
		}
		hs[i], _ = parseHeader(bufs[i][:])
	}
	switch {
	case hs[0] != nil && hs[1] == nil:
		return hs[0], 0, nil
	case hs[0] == nil && hs[1] != nil:
		return hs[1], 1, nil
	case hs[0] == nil:
		return nil, 0, errNoHeader
	case hs[0].seq > hs[1].seq:
		return hs[0], 0, nil
	case hs[1].seq > hs[0].seq:
		return hs[1], 1, nil
	case bufs[0] == bufs[1]:
		return hs[0], 0, nil
	}
	return nil, 0, errNoHeader
}

type regionEntry struct {
	offset uint64
	length uint32
}

// parseRegionTable finds the BAT and metadata regions, registering every
// entry as a region and refusing overlaps and unknown required entries.
func parseRegionTable(buf []byte, rs *regions) (bat, meta regionEntry, err error) {
	if !checksumValid(buf, 4) || string(buf[:4]) != "regi" {
		return bat, meta, syscall.EINVAL
	}
	count := le.Uint32(buf[8:])
	if count > maxRegionEntries {
		return bat, meta, syscall.EINVAL
	}
	var haveBAT, haveMeta bool
	for i := uint32(0); i < count; i++ {
		e := buf[16+32*i:]
		var g guid
		copy(g[:], e)
		re := regionEntry{offset: le.Uint64(e[16:]), length: le.Uint32(e[24:])}
		required := le.Uint32(e[28:])&1 != 0
		if rs.overlaps(re.offset, uint64(re.length)) {
			return bat, meta, syscall.EINVAL
		}
		*rs = append(*rs, region{re.offset, re.offset + uint64(re.length)})
		switch {
		case g == batGUID:
			if haveBAT {
				return bat, meta, syscall.EINVAL
			}
			haveBAT, bat = true, re
		case g == metadataGUID:
			if haveMeta {
				return bat, meta, syscall.EINVAL
			}
			haveMeta, meta = true, re
		case required:
			return bat, meta, syscall.ENOTSUP
		}
	}
	if !haveBAT || !haveMeta {
		return bat, meta, syscall.EINVAL
	}
	return bat, meta, nil
}

// metadata is what the metadata region says about the virtual disk.
type metadata struct {
	blockSize          uint32
	paramBits          uint32
	virtualSize        uint64
	logicalSectorSize  uint32
	physicalSectorSize uint32
	page83             guid
}

const (
	paramLeaveBlocksAllocated = 1
	paramHasParent            = 2
)

type metaItem struct{ offset, length uint32 }

// parseMetadataTable reads the items' places from the metadata table
// (metadataTableSize bytes at the start of the metadata region).
func parseMetadataTable(buf []byte) (map[guid]metaItem, error) {
	if string(buf[:8]) != "metadata" {
		return nil, syscall.EINVAL
	}
	count := uint32(le.Uint16(buf[10:]))
	if count*32 > metadataTableSize-32 {
		return nil, syscall.EINVAL
	}
	items := map[guid]metaItem{}
	for i := uint32(0); i < count; i++ {
		e := buf[32+32*i:]
		var g guid
		copy(g[:], e)
		switch g {
		case fileParamGUID, virtualSizeGUID, page83GUID, logicalSectorGUID, physSectorGUID, parentLocatorGUID:
			if _, dup := items[g]; dup {
				return nil, syscall.EINVAL
			}
			items[g] = metaItem{le.Uint32(e[16:]), le.Uint32(e[20:])}
		default:
			if le.Uint32(e[24:])&4 != 0 { // IsRequired
				return nil, syscall.ENOTSUP
			}
		}
	}
	for _, g := range []guid{fileParamGUID, virtualSizeGUID, page83GUID, logicalSectorGUID, physSectorGUID} {
		if _, ok := items[g]; !ok {
			return nil, syscall.ENOTSUP
		}
	}
	return items, nil
}

// readMetadata reads and validates the metadata items.
func readMetadata(r readerAt, size int64, metaRegion regionEntry) (*metadata, error) {
	table := make([]byte, metadataTableSize)
	if err := readFull(r, size, table, int64(metaRegion.offset)); err != nil {
		return nil, err
	}
	items, err := parseMetadataTable(table)
	if err != nil {
		return nil, err
	}
	read := func(g guid, n int) ([]byte, error) {
		b := make([]byte, n)
		off := int64(metaRegion.offset) + int64(items[g].offset)
		return b, readFull(r, size, b, off)
	}
	m := &metadata{}
	b, err := read(fileParamGUID, 8)
	if err != nil {
		return nil, err
	}
	m.blockSize, m.paramBits = le.Uint32(b), le.Uint32(b[4:])
	if m.paramBits&paramHasParent != 0 {
		if _, ok := items[parentLocatorGUID]; ok {
			return nil, syscall.ENOTSUP // differencing images: QEMU opens none
		}
		return nil, syscall.EINVAL
	}
	if b, err = read(virtualSizeGUID, 8); err != nil {
		return nil, err
	}
	m.virtualSize = le.Uint64(b)
	if b, err = read(logicalSectorGUID, 4); err != nil {
		return nil, err
	}
	m.logicalSectorSize = le.Uint32(b)
	if b, err = read(physSectorGUID, 4); err != nil {
		return nil, err
	}
	m.physicalSectorSize = le.Uint32(b)
	if b, err = read(page83GUID, 16); err != nil {
		return nil, err
	}
	copy(m.page83[:], b)
	if m.blockSize < blockSizeMin || m.blockSize > blockSizeMax || m.blockSize&(m.blockSize-1) != 0 {
		return nil, syscall.EINVAL
	}
	if m.logicalSectorSize != 512 && m.logicalSectorSize != 4096 {
		return nil, syscall.EINVAL
	}
	return m, nil
}

// chunkRatio is how many payload blocks one sector bitmap block covers.
func (m *metadata) chunkRatio() uint64 {
	return maxSectorsPerBlock * uint64(m.logicalSectorSize) / uint64(m.blockSize)
}

// batEntries counts the BAT's entries, payload and sector bitmap, with
// QEMU's 32-bit arithmetic (vhdx_calc_bat_entries).
func (m *metadata) batEntries() uint64 {
	dataBlocks := uint32((m.virtualSize + uint64(m.blockSize) - 1) / uint64(m.blockSize))
	shift := uint(bits.TrailingZeros64(m.chunkRatio()))
	return uint64(dataBlocks) + uint64((dataBlocks-1)>>shift)
}
