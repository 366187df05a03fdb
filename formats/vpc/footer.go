package vpc

import (
	"bytes"
	"encoding/binary"
)

// On-disk layout (all fields big-endian), from the VHD specification.
const (
	footerSize    = 512
	dynHeaderSize = 1024

	diskFixed   = 2
	diskDynamic = 3

	// offsets in the footer
	offCreatorApp  = 28
	offOrigSize    = 40
	offCurrentSize = 48
	offCylinders   = 56
	offHeads       = 58
	offSectors     = 59
	offDiskType    = 60
	offChecksum    = 64
	offUUID        = 68

	// offsets in the dynamic disk header
	offTableOffset = 16
	offMaxEntries  = 28
	offBlockSize   = 32
	offDynChecksum = 36

	// vhdMaxSectors caps the size at 2040 GiB, as QEMU does.
	vhdMaxSectors = 0xff000000
	// vhdMaxGeometry is the largest CHS geometry (65535×16×255): an image
	// with it takes its size from the footer's current size.
	vhdMaxGeometry = 65535 * 16 * 255

	unallocated = 0xffffffff
	// timestampBase is the VHD epoch, 2000-01-01 00:00:00 UTC.
	timestampBase = 946684800
)

var (
	footerMagic = []byte("conectix")
	dynMagic    = []byte("cxsparse")
)

// checksum is the one's complement of the byte sum of b, with the four
// bytes at skip (the checksum field itself) counted as zero.
func checksum(b []byte, skip int) uint32 {
	var sum uint32
	for i, c := range b {
		if i >= skip && i < skip+4 {
			continue
		}
		sum += uint32(c)
	}
	return ^sum
}

// footer is the parsed hard disk footer; raw keeps its bytes, rewritten
// as they are whenever the file grows.
type footer struct {
	raw         [footerSize]byte
	currentSize uint64
	cylinders   uint16
	heads       uint8
	sectors     uint8
	diskType    uint32
}

func parseFooter(b []byte) footer {
	var f footer
	copy(f.raw[:], b)
	f.currentSize = binary.BigEndian.Uint64(b[offCurrentSize:])
	f.cylinders = binary.BigEndian.Uint16(b[offCylinders:])
	f.heads = b[offHeads]
	f.sectors = b[offSectors]
	f.diskType = binary.BigEndian.Uint32(b[offDiskType:])
	return f
}

func (f *footer) checksumOK() bool {
	return checksum(f.raw[:], offChecksum) == binary.BigEndian.Uint32(f.raw[offChecksum:])
}

// chsSectors is the size the geometry describes.
func (f *footer) chsSectors() int64 {
	return int64(f.cylinders) * int64(f.heads) * int64(f.sectors)
}

// totalSectors is the virtual size in sectors as QEMU 7.2 decides it:
// Virtual PC (and QEMU's "qemu" images) size a disk by its geometry,
// while Hyper-V, disk2vhd, XenServer, XenConverter and QEMU's force_size
// images ("qem2") use the footer's current size. So does any image with
// the largest geometry, which cannot describe its size.
//
// The force_size_calc open option overrides the creator's choice, but not
// the largest geometry's.
func (f *footer) totalSectors(calc sizeCalc) int64 {
	s := f.chsSectors()
	useCHS := !usesCurrentSize(f.raw[offCreatorApp:offCreatorApp+4]) || calc == sizeByCHS
	if !useCHS || s == vhdMaxGeometry || calc == sizeByCurrentSize {
		s = int64(f.currentSize / 512)
	}
	return s
}

// sizeCalc is the force_size_calc open option: how the virtual size is
// taken from the footer.
type sizeCalc int

const (
	sizeByCreator     sizeCalc = iota // by the creator application
	sizeByCHS                         // "chs": the geometry
	sizeByCurrentSize                 // "current_size": the current size
)

// usesCurrentSize lists the creator applications whose images QEMU 7.2
// sizes by the footer's current size; every other one (Azure's "wa\0\0"
// among them, in 7.2) is sized by its geometry.
func usesCurrentSize(app []byte) bool {
	for _, a := range []string{"win ", "qem2", "d2v ", "CTXS", "tap\x00"} {
		if bytes.Equal(app, []byte(a)) {
			return true
		}
	}
	return false
}

// geometry is a cylinders/heads/sectors-per-track triple.
type geometry struct {
	cylinders uint16
	heads     uint8
	sectors   uint8
}

func (g geometry) total() int64 {
	return int64(g.cylinders) * int64(g.heads) * int64(g.sectors)
}

var maxGeometry = geometry{65535, 16, 255}

// calculateGeometry is the VHD specification's CHS algorithm with QEMU's
// cap at the largest geometry; the result may describe fewer sectors than
// asked for.
func calculateGeometry(totalSectors int64) geometry {
	totalSectors = min(totalSectors, vhdMaxGeometry)
	var g geometry
	var cylTimesHeads int64
	if totalSectors >= 65535*16*63 {
		g.sectors, g.heads = 255, 16
		cylTimesHeads = totalSectors / 255
	} else {
		g.sectors = 17
		cylTimesHeads = totalSectors / 17
		heads := max((cylTimesHeads+1023)/1024, 4)
		if cylTimesHeads >= heads*1024 || heads > 16 {
			g.sectors, heads = 31, 16
			cylTimesHeads = totalSectors / 31
		}
		if cylTimesHeads >= heads*1024 {
			g.sectors, heads = 63, 16
			cylTimesHeads = totalSectors / 63
		}
		g.heads = uint8(heads)
	}
	g.cylinders = uint16(cylTimesHeads / int64(g.heads))
	return g
}

// geometryFor finds the smallest geometry that holds totalSectors, trying
// ever larger counts as QEMU does so that a converted image never loses
// its tail.
func geometryFor(totalSectors int64) geometry {
	totalSectors = min(totalSectors, vhdMaxGeometry)
	var g geometry
	for i := int64(0); totalSectors > g.total(); i++ {
		g = calculateGeometry(totalSectors + i)
	}
	return g
}
