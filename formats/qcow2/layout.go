// Package qcow2 is the qcow2 format driver (versions 2 and 3), following
// qemu's docs/interop/qcow2.txt. This file is the dictionary of the on-disk
// layout: offsets, flags, masks and the limits qimg enforces, each with the
// reason for its number.
package qcow2

// Header field offsets ("== Header ==" in the specification). All numbers
// on disk are big endian.
const (
	offMagic                 = 0
	offVersion               = 4
	offBackingFileOffset     = 8
	offBackingFileSize       = 16
	offClusterBits           = 20
	offSize                  = 24
	offCryptMethod           = 32
	offL1Size                = 36
	offL1TableOffset         = 40
	offRefcountTableOffset   = 48
	offRefcountTableClusters = 56
	offNbSnapshots           = 60
	offSnapshotsOffset       = 64
	// version 3 and later
	offIncompatibleFeatures = 72
	offCompatibleFeatures   = 80
	offAutoclearFeatures    = 88
	offRefcountOrder        = 96
	offHeaderLength         = 100
	offCompressionType      = 104
)

const (
	magic = "QFI\xfb"

	// headerV2Length is the fixed length of a version 2 header.
	headerV2Length = 72
	// headerV3MinLength is the shortest version 3 header (through
	// header_length).
	headerV3MinLength = 104
	// headerV3Length is the length qemu writes since compression_type was
	// added: 105 bytes padded to a multiple of 8.
	headerV3Length = 112
)

// Incompatible feature bits: an image with a bit unknown here is refused.
const (
	incompatDirty        = 1 << 0 // refcounts may be stale (lazy refcounts)
	incompatCorrupt      = 1 << 1 // metadata may be inconsistent: no writes
	incompatDataFile     = 1 << 2 // guest data lives in an external file
	incompatCompression  = 1 << 3 // compression_type is not zlib
	incompatExtendedL2   = 1 << 4 // L2 entries carry subcluster bitmaps
	incompatKnown        = incompatDirty | incompatCorrupt | incompatDataFile | incompatCompression | incompatExtendedL2
	compatLazyRefcounts  = 1 << 0
	autoclearBitmaps     = 1 << 0 // the bitmaps extension is consistent
	autoclearDataFileRaw = 1 << 1 // the data file is a valid raw image
	autoclearKnown       = autoclearBitmaps | autoclearDataFileRaw
)

// Header extension types ("=== Header extensions ===").
const (
	extEnd           = 0x00000000
	extBackingFormat = 0xe2792aca
	extFeatureTable  = 0x6803f857
	extBitmaps       = 0x23852875
	extCrypto        = 0x0537be77
	extDataFile      = 0x44415441
)

// Feature name table entry: type (0 incompatible, 1 compatible, 2
// autoclear), bit, 46 bytes of name.
const (
	featureEntrySize = 48
	featureNameSize  = 46
)

// Crypt methods.
const (
	cryptNone = 0
	cryptAES  = 1
	cryptLUKS = 2
)

// Compression types (header byte 104).
const (
	compressionZlib = 0
	compressionZstd = 1
)

// Limits. Each one bounds memory or time spent on an image before any
// table is read; values above them are refused, as qemu refuses them.
const (
	// minClusterBits: 512-byte clusters, the sector size.
	minClusterBits = 9
	// maxClusterBits: qemu's implementation limit of 2 MiB clusters.
	maxClusterBits = 21
	// minExtendedL2ClusterBits: with 32 subclusters a cluster must hold
	// 512-byte subclusters at least (16 KiB).
	minExtendedL2ClusterBits = 14
	// maxL1Bytes is qemu's QCOW_MAX_L1_SIZE, 32 MiB: enough for 2 EB of
	// guest space with 2 MiB clusters.
	maxL1Bytes = 32 << 20
	// maxRefcountTableBytes is qemu's QCOW_MAX_REFTABLE_SIZE, 8 MiB: enough
	// to refcount 2 EB with 2 MiB clusters and 16-bit refcounts.
	maxRefcountTableBytes = 8 << 20
	// maxBackingNameSize: the specification's limit (qemu's buffer is 1 KiB
	// with its terminating zero).
	maxBackingNameSize = 1023
	// maxSnapshots is qemu's QCOW_MAX_SNAPSHOTS.
	maxSnapshots = 65536
	// maxSnapshotExtraData is qemu's QCOW_MAX_SNAPSHOT_EXTRA_DATA.
	maxSnapshotExtraData = 1024
	// maxSnapshotTableBytes bounds the snapshot table: qemu's
	// QCOW_MAX_SNAPSHOTS_SIZE, 64 MiB.
	maxSnapshotTableBytes = 64 << 20
	// maxDataFileNameSize bounds the external data file name (a path).
	maxDataFileNameSize = 4096
	// maxBitmaps is qemu's QCOW2_MAX_BITMAPS.
	maxBitmaps = 65535
	// maxBitmapDirectorySize is qemu's QCOW2_MAX_BITMAP_DIRECTORY_SIZE.
	maxBitmapDirectorySize = 1024 * maxBitmaps
	// maxRefcountOrder: refcount_bits up to 64.
	maxRefcountOrder = 6
	// maxHostOffset: L1/L2 entries hold bits 9..55 of host offsets (64 PB).
	maxHostOffset = 1 << 56
)

// On-disk table entries.
const (
	// l1OffsetMask keeps bits 9..55 of an L1 entry: the L2 table offset.
	l1OffsetMask = 0x00fffffffffffe00
	// l1ReservedMask are the bits that must be zero in an L1 entry.
	l1ReservedMask = 0x7f000000000001ff
	// oflagCopied (bit 63): the refcount of the cluster is exactly one, so
	// it may be written in place.
	oflagCopied = 1 << 63
	// oflagCompressed (bit 62): the L2 entry describes compressed data.
	oflagCompressed = 1 << 62
	// oflagZero (bit 0): the standard cluster reads as zeroes (v3 only).
	oflagZero = 1 << 0
	// l2OffsetMask keeps bits 9..55 of a standard L2 entry.
	l2OffsetMask = 0x00fffffffffffe00
	// l2ReservedMask are the reserved bits of a standard L2 entry (1..8 and
	// 56..61).
	l2ReservedMask = 0x3f000000000001fe
	// refcountTableOffsetMask keeps bits 9..63 of a refcount table entry.
	refcountTableOffsetMask = 0xfffffffffffffe00

	// subclusters per cluster with extended L2 entries.
	subclusters = 32
	// compressedSectorSize is the unit of a compressed cluster's length.
	compressedSectorSize = 512
)

// Snapshot table entry fields ("Snapshot table entry").
const (
	snapHeaderSize = 40
	// snapExtraV3 is the extra data version 3 images must carry (vm state
	// size large and disk size).
	snapExtraV3 = 16
)

// Default creation parameters, as qemu-img's.
const (
	defaultClusterBits   = 16
	defaultRefcountOrder = 4
)
