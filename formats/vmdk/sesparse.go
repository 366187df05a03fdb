package vmdk

import (
	"bytes"
	"encoding/binary"
	"syscall"

	"qimg/image"
)

// seSparse extents (ESXi 6.5+), read-only as in qemu: a const header
// checked strictly (the format is not documented), a volatile header
// without a journal to replay, 64-bit directory and table entries, 4 KiB
// grains.

const (
	seConstMagic    = 0xcafebabe
	seVolatileMagic = 0xcafecafe
	seVersion       = 0x0000000200000001
	seGTEntries     = 4096 // grain_table_size 64 sectors of 8-byte entries
)

// openSESparse opens f as a seSparse extent.
func openSESparse(f *image.Node) (*extent, error) {
	h := make([]byte, 512)
	if err := f.ReadPadded(h, 0); err != nil {
		return nil, errorf("Could not read const header from file '%s': %v", f.Filename, err)
	}
	le := binary.LittleEndian
	field := func(i int) uint64 { return le.Uint64(h[i*8:]) }
	switch {
	case field(0) != seConstMagic:
		return nil, errorf("Bad const header magic: 0x%016x", field(0))
	case field(1) != seVersion:
		return nil, image.Errorf(image.ErrUnsupported, "Unsupported version: 0x%016x", field(1))
	case field(3) != 8:
		return nil, image.Errorf(image.ErrUnsupported, "Unsupported grain size: %d", field(3))
	case field(4) != 64:
		return nil, image.Errorf(image.ErrUnsupported, "Unsupported grain table size: %d", field(4))
	case field(5) != 0:
		return nil, image.Errorf(image.ErrUnsupported, "Unsupported flags: 0x%016x", field(5))
	case field(6)|field(7)|field(8)|field(9) != 0:
		return nil, image.Errorf(image.ErrUnsupported, "Unsupported reserved bits: 0x%016x 0x%016x 0x%016x 0x%016x",
			field(6), field(7), field(8), field(9))
	case !isZero(h[208:]):
		return nil, image.Errorf(image.ErrUnsupported, "Unsupported non-zero const header padding")
	}
	v := make([]byte, 512)
	volatileOffset := field(10)
	if volatileOffset > uint64(f.Size())/sectorSize {
		return nil, errorf("Bad volatile header magic: 0x%016x", 0)
	}
	if err := f.ReadPadded(v, int64(volatileOffset)*sectorSize); err != nil {
		return nil, errorf("Could not read volatile header from file '%s': %v", f.Filename, err)
	}
	switch {
	case le.Uint64(v) != seVolatileMagic:
		return nil, errorf("Bad volatile header magic: 0x%016x", le.Uint64(v))
	case le.Uint64(v[24:]) != 0:
		return nil, image.Errorf(image.ErrUnsupported, "Image is dirty, Replaying journal not supported")
	case !isZero(v[32:]):
		return nil, image.Errorf(image.ErrUnsupported, "Unsupported non-zero volatile header padding")
	}
	capacity, gdOffset, gdSize := field(2), field(16), field(17)
	x := &extent{file: f, sectors: int64(capacity), grainSectors: 8, gtEntries: seGTEntries,
		se: true, seTables: int64(field(18)), seGrains: int64(field(24))}
	if gdSize > maxGDEntries*8/sectorSize || capacity > maxCapacity {
		return nil, image.Errorf(syscall.EFBIG, "L1 size too big")
	}
	entries := gdSize * sectorSize / 8
	off := int64(gdOffset) * sectorSize
	if gdOffset > uint64(f.Size())/sectorSize || int64(entries)*8 > f.Size()-off {
		return nil, errorf("Could not read l1 table from extent '%s': Invalid argument", f.Filename)
	}
	raw := make([]byte, entries*8)
	if err := f.ReadPadded(raw, off); err != nil {
		return nil, err
	}
	x.gd64 = make([]uint64, entries)
	for i := range x.gd64 {
		x.gd64[i] = le.Uint64(raw[i*8:])
	}
	x.tables64 = map[uint64][]uint64{}
	return x, nil
}

func isZero(b []byte) bool { return len(bytes.Trim(b, "\x00")) == 0 }

var errSE = image.Errorf(syscall.EIO, "Input/output error")

// lookupSE is qemu's get_cluster_offset for seSparse entries.
func (x *extent) lookupSE(rel int64) (grain, error) {
	sector := rel / sectorSize
	gdIndex := sector / (seGTEntries * 8)
	if gdIndex >= int64(len(x.gd64)) {
		return grain{}, errSE
	}
	l1 := x.gd64[gdIndex]
	if l1 == 0 {
		return grain{kind: grainUnallocated}, nil
	}
	if l1&0xffffffff00000000 != 0x1000000000000000 {
		return grain{}, errSE
	}
	gt := uint64(x.seTables) + (l1&0xffffffff)*seGTEntries*8/sectorSize
	if gt > 0xffffffff || gt == 0 {
		if gt == 0 {
			return grain{kind: grainUnallocated}, nil
		}
		return grain{}, errSE
	}
	table, err := x.table64(gt)
	if err != nil {
		return grain{}, err
	}
	e := table[(sector/8)%seGTEntries]
	switch e & 0xf000000000000000 {
	case 0:
		if e != 0 {
			return grain{}, errSE
		}
		return grain{kind: grainUnallocated}, nil
	case 0x1000000000000000, 0x2000000000000000:
		return grain{kind: grainZero}, nil
	case 0x3000000000000000:
		cluster := (e&0x0fff000000000000)>>48 | (e&0x0000ffffffffffff)<<12
		host := (uint64(x.seGrains) + cluster*8) * sectorSize
		if host/sectorSize < cluster || host > 1<<62 {
			return grain{}, errSE
		}
		return grain{kind: grainData, host: int64(host)}, nil
	}
	return grain{}, errSE
}

func (x *extent) table64(gt uint64) ([]uint64, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if t, ok := x.tables64[gt]; ok {
		return t, nil
	}
	raw := make([]byte, seGTEntries*8)
	if err := x.file.ReadPadded(raw, int64(gt)*sectorSize); err != nil {
		return nil, err
	}
	t := make([]uint64, seGTEntries)
	for i := range t {
		t[i] = binary.LittleEndian.Uint64(raw[i*8:])
	}
	if len(x.tables64) >= tableCacheSize/8 {
		clear(x.tables64)
	}
	x.tables64[gt] = t
	return t, nil
}
