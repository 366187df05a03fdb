package qed

import (
	"encoding/binary"
	"math/bits"

	"qimg/image"
)

// On-disk constants of the QED specification.
const (
	magic      = "QED\x00"
	headerSize = 64 // sizeof(QEDHeader)

	minClusterSize = 4 << 10
	maxClusterSize = 64 << 20
	minTableSize   = 1
	maxTableSize   = 16

	defaultClusterSize = 64 << 10
	defaultTableSize   = 4

	featureBackingFile = 1 << 0
	featureNeedCheck   = 1 << 1
	featureNoProbe     = 1 << 2 // the backing file is raw: never probe it
	knownFeatures      = featureBackingFile | featureNeedCheck | featureNoProbe

	// maxBackingName is the room QEMU gives a backing file name
	// (PATH_MAX), terminator included.
	maxBackingName = 4096

	// An L2 entry of 1 marks a cluster that reads as zeroes.
	zeroCluster = 1
)

// header is the 64-byte QED header, little-endian on disk.
type header struct {
	clusterSize      uint32
	tableSize        uint32 // in clusters
	headerSize       uint32 // in clusters
	features         uint64
	compatFeatures   uint64
	autoclear        uint64
	l1TableOffset    uint64
	imageSize        uint64
	backingNameOff   uint32
	backingNameSize  uint32
	rawMagicMismatch bool
}

func parseHeader(b []byte) header {
	var buf [headerSize]byte
	copy(buf[:], b) // a short file reads as zeroes past its end
	le := binary.LittleEndian
	return header{
		rawMagicMismatch: string(buf[:4]) != magic,
		clusterSize:      le.Uint32(buf[4:]),
		tableSize:        le.Uint32(buf[8:]),
		headerSize:       le.Uint32(buf[12:]),
		features:         le.Uint64(buf[16:]),
		compatFeatures:   le.Uint64(buf[24:]),
		autoclear:        le.Uint64(buf[32:]),
		l1TableOffset:    le.Uint64(buf[40:]),
		imageSize:        le.Uint64(buf[48:]),
		backingNameOff:   le.Uint32(buf[56:]),
		backingNameSize:  le.Uint32(buf[60:]),
	}
}

func (h *header) encode() []byte {
	b := make([]byte, headerSize)
	le := binary.LittleEndian
	copy(b, magic)
	le.PutUint32(b[4:], h.clusterSize)
	le.PutUint32(b[8:], h.tableSize)
	le.PutUint32(b[12:], h.headerSize)
	le.PutUint64(b[16:], h.features)
	le.PutUint64(b[24:], h.compatFeatures)
	le.PutUint64(b[32:], h.autoclear)
	le.PutUint64(b[40:], h.l1TableOffset)
	le.PutUint64(b[48:], h.imageSize)
	le.PutUint32(b[56:], h.backingNameOff)
	le.PutUint32(b[60:], h.backingNameSize)
	return b
}

func isPow2(v uint64) bool { return v != 0 && v&(v-1) == 0 }

func clusterSizeValid(cs uint64) bool {
	return isPow2(cs) && cs >= minClusterSize && cs <= maxClusterSize
}

func tableSizeValid(ts uint64) bool {
	return isPow2(ts) && ts >= minTableSize && ts <= maxTableSize
}

// maxImageSize is what one L1 table of L2 tables can map.
func maxImageSize(clusterSize, tableSize uint64) uint64 {
	entries := clusterSize * tableSize / 8
	return entries * entries * clusterSize
}

func imageSizeValid(size, clusterSize, tableSize uint64) bool {
	return size%512 == 0 && size <= maxImageSize(clusterSize, tableSize)
}

// validate checks the header as QEMU's open does, in its order and with
// its words; fileSize is the file's length rounded down to a cluster.
func (h *header) validate() error {
	if h.rawMagicMismatch {
		return image.Errorf(image.ErrWrongFormat, "Image not in QED format")
	}
	if unknown := h.features &^ knownFeatures; unknown != 0 {
		return image.Errorf(image.ErrUnsupported, "Unsupported QED features: %x", unknown)
	}
	if !clusterSizeValid(uint64(h.clusterSize)) {
		return image.Errorf(image.ErrCorrupt, "QED cluster size is invalid")
	}
	if !tableSizeValid(uint64(h.tableSize)) {
		return image.Errorf(image.ErrCorrupt, "QED table size is invalid")
	}
	if !imageSizeValid(h.imageSize, uint64(h.clusterSize), uint64(h.tableSize)) {
		return image.Errorf(image.ErrCorrupt, "QED image size is invalid")
	}
	return nil
}

// layout is what the header's sizes imply for addressing.
type layout struct {
	clusterSize int64
	clusterBits uint
	tableBytes  int64 // bytes of one L1 or L2 table
	tableNelems int64
	headerBytes int64
	fileSize    int64 // the file rounded down to whole clusters
}

func newLayout(h *header, fileSize int64) layout {
	cs := int64(h.clusterSize)
	return layout{
		clusterSize: cs,
		clusterBits: uint(bits.TrailingZeros32(h.clusterSize)),
		tableBytes:  cs * int64(h.tableSize),
		tableNelems: cs * int64(h.tableSize) / 8,
		headerBytes: cs * int64(h.headerSize),
		fileSize:    fileSize &^ (cs - 1),
	}
}

// clusterOK is QEMU's qed_check_cluster_offset: aligned, past the header
// and inside the file.
func (l *layout) clusterOK(off uint64) bool {
	if off&uint64(l.clusterSize-1) != 0 {
		return false
	}
	return off >= uint64(l.headerBytes) && off < uint64(l.fileSize)
}

// tableOK is QEMU's qed_check_table_offset: the first and last cluster of
// the table valid. Like QEMU, a one-cluster table never passes (its end
// equals its start, which the overflow check refuses).
func (l *layout) tableOK(off uint64) bool {
	end := off + uint64(l.tableBytes-l.clusterSize)
	if end <= off {
		return false
	}
	return l.clusterOK(off) && l.clusterOK(end)
}
