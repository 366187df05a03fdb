package qcow2

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"qimg/image"
)

// header is the image header with its extensions, as read from (or about
// to be written to) the first cluster.
type header struct {
	version               uint32
	backingFileOffset     uint64
	backingFileSize       uint32
	clusterBits           uint32
	size                  uint64
	cryptMethod           uint32
	l1Size                uint32
	l1TableOffset         uint64
	refcountTableOffset   uint64
	refcountTableClusters uint32
	nbSnapshots           uint32
	snapshotsOffset       uint64
	incompatible          uint64
	compatible            uint64
	autoclear             uint64
	refcountOrder         uint32
	headerLength          uint32
	compressionType       uint8
	// tail holds the header bytes after compression_type up to
	// header_length: fields of later versions, preserved as they are.
	tail []byte

	// extensions in the order found, unknown ones included; the known ones
	// are also decoded below.
	extensions    []extension
	backingFile   string
	backingFormat string
	dataFile      string
	features      []featureName
	bitmaps       *bitmapsExt
	crypto        *cryptoExt
}

// extension is one header extension, kept raw so that rewriting the
// header preserves what qimg does not understand.
type extension struct {
	typ  uint32
	data []byte
}

// featureName is an entry of the feature name table.
type featureName struct {
	typ  uint8 // 0 incompatible, 1 compatible, 2 autoclear
	bit  uint8
	name string
}

type bitmapsExt struct {
	nbBitmaps       uint32
	directorySize   uint64
	directoryOffset uint64
}

type cryptoExt struct {
	offset, length uint64
}

var be = binary.BigEndian

func (h *header) clusterSize() int64 { return 1 << h.clusterBits }

func (h *header) extendedL2() bool { return h.incompatible&incompatExtendedL2 != 0 }

func (h *header) refcountBits() int { return 1 << h.refcountOrder }

// l2EntrySize is 8, or 16 with extended L2 entries.
func (h *header) l2EntrySize() int64 {
	if h.extendedL2() {
		return 16
	}
	return 8
}

// l2Bits is log2 of the number of entries in an L2 table.
func (h *header) l2Bits() uint32 {
	if h.extendedL2() {
		return h.clusterBits - 4
	}
	return h.clusterBits - 3
}

func fieldError(off int64, field string, v any, reason string) error {
	return &image.FormatError{Offset: off, Field: field, Value: v, Reason: reason}
}

// parseHeader decodes and validates the fixed header in buf (at least the
// first min(cluster, file) bytes of the image; at least 104 bytes). It
// does not read anything the header points to except
// the extensions, which must lie in buf.
func parseHeader(buf []byte) (*header, error) {
	if len(buf) < headerV2Length || string(buf[:4]) != magic {
		return nil, image.Errorf(image.ErrWrongFormat, "Image is not in qcow2 format")
	}
	h := &header{
		version:               be.Uint32(buf[offVersion:]),
		backingFileOffset:     be.Uint64(buf[offBackingFileOffset:]),
		backingFileSize:       be.Uint32(buf[offBackingFileSize:]),
		clusterBits:           be.Uint32(buf[offClusterBits:]),
		size:                  be.Uint64(buf[offSize:]),
		cryptMethod:           be.Uint32(buf[offCryptMethod:]),
		l1Size:                be.Uint32(buf[offL1Size:]),
		l1TableOffset:         be.Uint64(buf[offL1TableOffset:]),
		refcountTableOffset:   be.Uint64(buf[offRefcountTableOffset:]),
		refcountTableClusters: be.Uint32(buf[offRefcountTableClusters:]),
		nbSnapshots:           be.Uint32(buf[offNbSnapshots:]),
		snapshotsOffset:       be.Uint64(buf[offSnapshotsOffset:]),
		refcountOrder:         defaultRefcountOrder,
		headerLength:          headerV2Length,
	}
	if h.version < 2 || h.version > 3 {
		return nil, image.Errorf(image.ErrUnsupported, "Unsupported qcow2 version %d", h.version)
	}
	if h.clusterBits < minClusterBits || h.clusterBits > maxClusterBits {
		return nil, image.Errorf(image.ErrCorrupt, "Unsupported cluster size: 2^%d", h.clusterBits)
	}
	cs := h.clusterSize()
	if h.version == 3 {
		if len(buf) < headerV3MinLength {
			return nil, image.Errorf(image.ErrCorrupt, "qcow2 header is truncated")
		}
		h.incompatible = be.Uint64(buf[offIncompatibleFeatures:])
		h.compatible = be.Uint64(buf[offCompatibleFeatures:])
		h.autoclear = be.Uint64(buf[offAutoclearFeatures:])
		h.refcountOrder = be.Uint32(buf[offRefcountOrder:])
		h.headerLength = be.Uint32(buf[offHeaderLength:])
		if h.headerLength < headerV3MinLength {
			return nil, image.Errorf(image.ErrCorrupt, "qcow2 header too short")
		}
		if int64(h.headerLength) > cs {
			return nil, image.Errorf(image.ErrCorrupt, "qcow2 header exceeds cluster size")
		}
		if int(h.headerLength) > len(buf) {
			return nil, image.Errorf(image.ErrCorrupt, "qcow2 header is truncated")
		}
		if h.headerLength > offCompressionType {
			h.compressionType = buf[offCompressionType]
			h.tail = append([]byte(nil), buf[offCompressionType+1:h.headerLength]...)
		}
	}
	if h.backingFileOffset != 0 && h.backingFileOffset > uint64(cs) {
		return nil, image.Errorf(image.ErrCorrupt, "Invalid backing file offset")
	}
	if unknown := h.incompatible &^ incompatKnown; unknown != 0 {
		// named from the image's own feature name table, read leniently
		// as qemu reads it here
		h.walkExtensions(buf, h.decodeExtension)
		return nil, image.Errorf(image.ErrUnsupported, "Unsupported qcow2 feature(s): %s", unsupportedFeatures(h.features, unknown))
	}
	if h.refcountOrder > maxRefcountOrder {
		return nil, image.Errorf(image.ErrCorrupt, "Reference count entry width too large; may not exceed 64 bits")
	}
	if err := h.checkCompression(); err != nil {
		return nil, err
	}
	if h.extendedL2() && h.clusterBits < minExtendedL2ClusterBits {
		return nil, image.Errorf(image.ErrCorrupt, "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
	}
	if h.backingFileOffset != 0 && h.backingFileSize > maxBackingNameSize {
		return nil, image.Errorf(image.ErrCorrupt, "Backing file name too long")
	}
	if err := h.checkTables(); err != nil {
		return nil, err
	}
	if err := h.parseExtensions(buf); err != nil {
		return nil, err
	}
	if h.backingFileOffset != 0 && h.backingFileSize > 0 {
		end := h.backingFileOffset + uint64(h.backingFileSize)
		if end > uint64(len(buf)) {
			return nil, image.Errorf(image.ErrCorrupt, "Backing file name lies beyond the end of the file")
		}
		h.backingFile = string(buf[h.backingFileOffset:end])
	}
	return h, nil
}

func (h *header) checkCompression() error {
	switch {
	case h.compressionType > compressionZstd:
		return image.Errorf(image.ErrUnsupported, "qcow2: unknown compression type: %d", h.compressionType)
	case h.incompatible&incompatCompression != 0 && h.compressionType == compressionZlib:
		return image.Errorf(image.ErrCorrupt, "qcow2: Compression type incompatible feature bit must not be set")
	case h.incompatible&incompatCompression == 0 && h.compressionType != compressionZlib:
		return image.Errorf(image.ErrCorrupt, "qcow2: Compression type incompatible feature bit must be set")
	}
	return nil
}

// checkTables validates the table locations and sizes against the fixed
// limits, in qemu's order (refcount table, snapshot table, L1 table, then
// the size), before anything is allocated for them. Tables may lie beyond
// the end of the file, as qemu allows: what is missing reads as zeroes
// (a truncated image still opens, for info and for check to report and
// repair it); only a writable open requires them inside the file
// (tablesInFile).
func (h *header) checkTables() error {
	// refcount table
	rtBytes := uint64(h.refcountTableClusters) << h.clusterBits
	if rtBytes > maxRefcountTableBytes {
		return image.Errorf(image.ErrCorrupt, "Reference count table too large")
	}
	if h.refcountTableClusters == 0 {
		return image.Errorf(image.ErrCorrupt, "Image does not contain a reference count table")
	}
	if err := h.checkRegion(h.refcountTableOffset, rtBytes, "Reference count table"); err != nil {
		return err
	}
	// snapshot table: qemu's qcow2_validate_table, whatever the count; the
	// entries are read at open, zeroes past the end of the file as in qemu
	if h.nbSnapshots > maxSnapshots {
		return image.Errorf(image.ErrCorrupt, "Snapshot table too large")
	}
	if err := h.checkRegion(h.snapshotsOffset, uint64(h.nbSnapshots)*snapHeaderSize, "Snapshot table"); err != nil {
		return err
	}
	// L1 table
	if uint64(h.l1Size)*8 > maxL1Bytes {
		return image.Errorf(image.ErrCorrupt, "Active L1 table too large")
	}
	// the L1 entries the size needs, in qemu's unsigned 64-bit arithmetic
	// (size_to_l1), which wraps for sizes near 2^64
	shift := h.clusterBits + h.l2Bits()
	need := (h.size + (1 << shift) - 1) >> shift
	if need > math.MaxInt32 {
		return image.Errorf(image.ErrCorrupt, "Image is too big")
	}
	if need > uint64(h.l1Size) {
		return image.Errorf(image.ErrCorrupt, "L1 table is too small")
	}
	if h.l1Size > 0 {
		if err := h.checkRegion(h.l1TableOffset, uint64(h.l1Size)*8, "Active L1 table"); err != nil {
			return err
		}
	}
	if h.size > math.MaxInt64 {
		// what qemu says when its sector count overflows
		return image.Errorf(image.ErrCorrupt, "Could not refresh total sector count: File too large")
	}
	return nil
}

// checkRegion validates a table's offset as qemu's qcow2_validate_table
// does: cluster aligned, and its end representable as a file offset.
func (h *header) checkRegion(off, length uint64, what string) error {
	if off%uint64(h.clusterSize()) != 0 || off > 1<<63-1-length {
		return image.Errorf(image.ErrCorrupt, "%s offset invalid", what)
	}
	return nil
}

// tablesInFile refuses tables that lie beyond the end of the file, for a
// writable open: writing an image whose tables are missing would
// allocate over them. Such an image is repaired by check -r, or copied.
// The snapshot table is not among them: as in qemu, what is missing of it
// reads as zeroes and a new table is written elsewhere.
func (h *header) tablesInFile(fileSize int64) error {
	regions := []struct {
		off, length uint64
		what        string
	}{
		{h.refcountTableOffset, uint64(h.refcountTableClusters) << h.clusterBits, "Reference count table"},
		{h.l1TableOffset, uint64(h.l1Size) * 8, "Active L1 table"},
	}
	for _, r := range regions {
		if r.length > 0 && r.off+r.length > uint64(fileSize) {
			return image.Errorf(image.ErrCorrupt, "%s lies beyond the end of the file (offset %#x, %d bytes, file size %d)", r.what, r.off, r.length, fileSize)
		}
	}
	return nil
}

// parseExtensions walks the header extensions between the header and the
// end of the first cluster (or of buf, if the file is shorter). A known
// extension given twice is read as qemu reads it, the last one winning,
// and kept once, at its first place, for a rewrite of the header.
func (h *header) parseExtensions(buf []byte) error {
	return h.walkExtensions(buf, func(typ uint32, data []byte) error {
		if known[typ] && h.replaceExtension(typ, data) {
			return h.decodeExtension(typ, data)
		}
		h.extensions = append(h.extensions, extension{typ: typ, data: data})
		return h.decodeExtension(typ, data)
	})
}

// known are the extensions qimg decodes and writes itself; others are
// kept as they are, every copy of them.
var known = map[uint32]bool{extBackingFormat: true, extFeatureTable: true, extBitmaps: true, extCrypto: true, extDataFile: true}

// replaceExtension replaces the data of an extension already read.
func (h *header) replaceExtension(typ uint32, data []byte) bool {
	for i := range h.extensions {
		if h.extensions[i].typ == typ {
			h.extensions[i].data = data
			return true
		}
	}
	return false
}

// walkExtensions calls visit for each extension in the area after the
// header, in order, until the end marker.
func (h *header) walkExtensions(buf []byte, visit func(typ uint32, data []byte) error) error {
	if h.version < 3 && h.backingFileOffset == 0 && len(buf) <= headerV2Length {
		return nil
	}
	end := int64(len(buf))
	if cs := h.clusterSize(); end > cs {
		end = cs
	}
	if h.backingFileOffset != 0 && int64(h.backingFileOffset) < end {
		end = int64(h.backingFileOffset)
	}
	off := int64(h.headerLength)
	for {
		if off+8 > end {
			if off == end || h.version < 3 {
				// v2 images may have no end marker when the extension area is
				// exactly filled; qemu stops there too.
				return nil
			}
			return image.Errorf(image.ErrCorrupt, "qcow2_read_extension: ERROR: pread fail from offset %d", off)
		}
		typ := be.Uint32(buf[off:])
		length := int64(be.Uint32(buf[off+4:]))
		off += 8
		if typ == extEnd {
			return nil
		}
		if length > end-off {
			return image.Errorf(image.ErrCorrupt, "qcow2_read_extension: ERROR: ext_magic=0x%x ext_len=%d too large", typ, length)
		}
		if err := visit(typ, append([]byte(nil), buf[off:off+length]...)); err != nil {
			return err
		}
		off += (length + 7) &^ 7
	}
}

func (h *header) decodeExtension(typ uint32, data []byte) error {
	switch typ {
	case extBackingFormat:
		if len(data) > 1023 {
			return image.Errorf(image.ErrCorrupt, "ERROR: ext_backing_format: len=%d too large", len(data))
		}
		h.backingFormat = cString(data)
	case extFeatureTable:
		h.features = nil // the last table is the one qemu reads
		for i := 0; i+featureEntrySize <= len(data); i += featureEntrySize {
			e := data[i : i+featureEntrySize]
			h.features = append(h.features, featureName{typ: e[0], bit: e[1], name: cString(e[2:])})
		}
	case extBitmaps:
		if len(data) != 24 {
			return image.Errorf(image.ErrCorrupt, "bitmaps_ext: Invalid extension length")
		}
		b := &bitmapsExt{nbBitmaps: be.Uint32(data), directorySize: be.Uint64(data[8:]), directoryOffset: be.Uint64(data[16:])}
		if b.nbBitmaps > maxBitmaps {
			return image.Errorf(image.ErrCorrupt, "bitmaps_ext: Image has %d bitmaps, exceeding the QEMU supported maximum of %d", b.nbBitmaps, maxBitmaps)
		}
		if b.directorySize > maxBitmapDirectorySize {
			return image.Errorf(image.ErrCorrupt, "bitmaps_ext: Bitmap directory size (%d) exceeds the maximum supported size (%d)", b.directorySize, maxBitmapDirectorySize)
		}
		h.bitmaps = b
	case extCrypto:
		if len(data) != 16 {
			return image.Errorf(image.ErrCorrupt, "Unable to read CRYPTO header extension")
		}
		h.crypto = &cryptoExt{offset: be.Uint64(data), length: be.Uint64(data[8:])}
	case extDataFile:
		if len(data) > maxDataFileNameSize {
			return image.Errorf(image.ErrCorrupt, "External data file name too long")
		}
		h.dataFile = string(data)
	}
	return nil
}

// cString is the bytes up to the first zero.
func cString(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// unsupportedFeatures names the incompatible features of mask as qemu's
// report_unsupported_feature does: the table's names in its order up to
// the first empty one, then the bits left
// unnamed as one hexadecimal mask.
func unsupportedFeatures(table []featureName, mask uint64) string {
	var names []string
	for _, f := range table {
		if f.name == "" {
			break
		}
		if f.typ != 0 || f.bit >= 64 || mask&(1<<f.bit) == 0 {
			continue // not an incompatible feature, or not set
		}
		names = append(names, f.name)
		mask &^= 1 << f.bit
	}
	if mask != 0 {
		names = append(names, fmt.Sprintf("Unknown incompatible feature: %x", mask))
	}
	return strings.Join(names, ", ")
}

// encode writes the header and its extensions into a buffer of one
// cluster; the backing file name follows the extensions. It fails if they
// do not fit.
func (h *header) encode() ([]byte, error) {
	cs := h.clusterSize()
	buf := make([]byte, cs)
	copy(buf, magic)
	be.PutUint32(buf[offVersion:], h.version)
	be.PutUint32(buf[offClusterBits:], h.clusterBits)
	be.PutUint64(buf[offSize:], h.size)
	be.PutUint32(buf[offCryptMethod:], h.cryptMethod)
	be.PutUint32(buf[offL1Size:], h.l1Size)
	be.PutUint64(buf[offL1TableOffset:], h.l1TableOffset)
	be.PutUint64(buf[offRefcountTableOffset:], h.refcountTableOffset)
	be.PutUint32(buf[offRefcountTableClusters:], h.refcountTableClusters)
	be.PutUint32(buf[offNbSnapshots:], h.nbSnapshots)
	be.PutUint64(buf[offSnapshotsOffset:], h.snapshotsOffset)
	off := int64(headerV2Length)
	if h.version >= 3 {
		be.PutUint64(buf[offIncompatibleFeatures:], h.incompatible)
		be.PutUint64(buf[offCompatibleFeatures:], h.compatible)
		be.PutUint64(buf[offAutoclearFeatures:], h.autoclear)
		be.PutUint32(buf[offRefcountOrder:], h.refcountOrder)
		be.PutUint32(buf[offHeaderLength:], h.headerLength)
		if h.headerLength > offCompressionType {
			buf[offCompressionType] = h.compressionType
			copy(buf[offCompressionType+1:h.headerLength], h.tail)
		}
		off = int64(h.headerLength)
	}
	for _, e := range h.writeOrder() {
		n := int64(len(e.data))
		if off+8+((n+7)&^7) > cs {
			return nil, image.Errorf(image.ErrUnsupported, "qcow2 header extensions do not fit in the first cluster")
		}
		be.PutUint32(buf[off:], e.typ)
		be.PutUint32(buf[off+4:], uint32(n))
		copy(buf[off+8:], e.data)
		off += 8 + ((n + 7) &^ 7)
	}
	// end of extensions
	if off+8 > cs {
		return nil, image.Errorf(image.ErrUnsupported, "qcow2 header extensions do not fit in the first cluster")
	}
	off += 8
	h.backingFileOffset, h.backingFileSize = 0, 0
	if h.backingFile != "" {
		n := int64(len(h.backingFile))
		if n > maxBackingNameSize || off+n > cs {
			return nil, image.Errorf(image.ErrUnsupported, "Backing file name too long")
		}
		h.backingFileOffset, h.backingFileSize = uint64(off), uint32(n)
		copy(buf[off:], h.backingFile)
		off += n
	}
	be.PutUint64(buf[offBackingFileOffset:], h.backingFileOffset)
	be.PutUint32(buf[offBackingFileSize:], h.backingFileSize)
	return buf[:off], nil
}

// writeOrder lists the extensions as qemu's qcow2_update_header writes
// them: backing format, data file, crypto header, its own feature name
// table (version 3, clusters of 8 KiB or more), bitmaps, then the unknown ones in the reverse
// of the order they were read in (qemu prepends each to its list).
func (h *header) writeOrder() []extension {
	var out []extension
	for _, typ := range []uint32{extBackingFormat, extDataFile, extCrypto} {
		out = append(out, h.extensionsOf(typ)...)
	}
	if h.version >= 3 && h.clusterSize() >= 8192 {
		// qemu leaves the table out of small first clusters
		out = append(out, extension{typ: extFeatureTable, data: featureTable()})
	}
	out = append(out, h.extensionsOf(extBitmaps)...)
	for i := len(h.extensions) - 1; i >= 0; i-- {
		if !known[h.extensions[i].typ] {
			out = append(out, h.extensions[i])
		}
	}
	return out
}

// extensionsOf lists the extensions of type typ (one at most for a known
// type).
func (h *header) extensionsOf(typ uint32) []extension {
	var out []extension
	for _, e := range h.extensions {
		if e.typ == typ {
			out = append(out, e)
		}
	}
	return out
}

// setExtension replaces (or appends, or with data nil removes) the
// extension of type typ, keeping the others in their order.
func (h *header) setExtension(typ uint32, data []byte) {
	for i, e := range h.extensions {
		if e.typ == typ {
			if data == nil {
				h.extensions = append(h.extensions[:i:i], h.extensions[i+1:]...)
			} else {
				h.extensions[i].data = data
			}
			return
		}
	}
	if data != nil {
		h.extensions = append(h.extensions, extension{typ: typ, data: data})
	}
}

// featureTable is the feature name table qemu writes into new images.
func featureTable() []byte {
	entries := []featureName{
		{0, 0, "dirty bit"},
		{0, 1, "corrupt bit"},
		{0, 2, "external data file"},
		{0, 3, "compression type"},
		{0, 4, "extended L2 entries"},
		{1, 0, "lazy refcounts"},
		{2, 0, "bitmaps"},
		{2, 1, "raw external data"},
	}
	buf := make([]byte, len(entries)*featureEntrySize)
	for i, e := range entries {
		b := buf[i*featureEntrySize:]
		b[0], b[1] = e.typ, e.bit
		copy(b[2:2+featureNameSize], e.name)
	}
	return buf
}

// clone is a copy of the header whose extensions can change without
// changing h's.
func (h *header) clone() *header {
	nh := *h
	nh.extensions = slices.Clone(h.extensions)
	nh.tail = slices.Clone(h.tail)
	return &nh
}
