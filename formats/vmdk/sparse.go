package vmdk

import (
	"encoding/binary"
	"sync"
	"syscall"

	"qimg/image"
)

const (
	magicKDMV = "KDMV"
	magicCOWD = "COWD"

	flagRGD       = 1 << 1 // redundant grain directory in use
	flagZeroGrain = 1 << 2 // grain table entry 1 means a zeroed grain
	flagMarker    = 1 << 17
	compressZlib  = 1
	gdAtEnd       = ^uint64(0) // streamOptimized: the footer has the offsets

	sectorSize = 512
	descSize   = 20 * sectorSize // the descriptor area qemu reads CIDs from
	// maxGrainSectors is qemu's "Invalid granularity" bound (1 GiB).
	maxGrainSectors = 0x200000
	// maxGDEntries is qemu's "L1 size too big" bound.
	maxGDEntries = 32 << 20
	// maxCapacity keeps every guest offset, summed over extents, in int64.
	maxCapacity = 1 << 50 // sectors
	// maxBufferedGrain bounds the grains qimg holds in memory whole
	// (deflated grains, grains allocated by a write): qemu-img makes 64
	// KiB grains; a larger one from a small file could inflate to 1 GiB.
	maxBufferedGrain = 16 << 20
	// tableCacheSize bounds the grain tables kept in memory per extent.
	tableCacheSize = 256
)

// extent is one extent of the image: a flat range of a file or a sparse
// file with its grain directory.
type extent struct {
	file    *image.Node
	kind    string // the descriptor's type; "" for the image's own file
	start   int64  // first guest byte
	sectors int64

	flat       bool
	flatOffset int64 // bytes

	compressed bool
	marker     bool
	zeroGrain  bool
	version    uint32

	grainSectors int64
	gtEntries    int64
	gd           []uint32
	rgd          []uint32 // the redundant directory, when in use

	se        bool // seSparse: 64-bit entries
	seTables  int64
	seGrains  int64
	gd64      []uint64
	tables64  map[uint64][]uint64
	nextGrain int64 // where the next grain is allocated; 0 until known

	mu     sync.Mutex
	tables map[uint32][]uint32
	// the last decompressed grain, for reads smaller than a grain
	lastHost  int64
	lastGrain []byte
	// buffers of two grains for deflated grains being read
	deflated sync.Pool
}

func (x *extent) grainSize() int64 { return x.grainSectors * sectorSize }

func (x *extent) end() int64 { return x.sectors * sectorSize }

// runEnd is where the grain (or flat extent) holding rel ends.
func (x *extent) runEnd(rel int64) int64 {
	if x.flat {
		return x.end()
	}
	return min((rel/x.grainSize()+1)*x.grainSize(), x.end())
}

// header4 is the hosted sparse header (SparseExtentHeader after magic).
type header4 struct {
	version, flags uint32
	capacity       uint64
	granularity    uint64
	descOffset     uint64
	descSize       uint64
	numGTEsPerGT   uint32
	rgdOffset      uint64
	gdOffset       uint64
	grainOffset    uint64
	compressAlgo   uint16
}

func parseHeader4(b []byte) header4 {
	le := binary.LittleEndian
	return header4{
		version:      le.Uint32(b[4:]),
		flags:        le.Uint32(b[8:]),
		capacity:     le.Uint64(b[12:]),
		granularity:  le.Uint64(b[20:]),
		descOffset:   le.Uint64(b[28:]),
		descSize:     le.Uint64(b[36:]),
		numGTEsPerGT: le.Uint32(b[44:]),
		rgdOffset:    le.Uint64(b[48:]),
		gdOffset:     le.Uint64(b[56:]),
		grainOffset:  le.Uint64(b[64:]),
		compressAlgo: le.Uint16(b[77:]),
	}
}

// readDescriptorArea reads what qemu's vmdk_read_desc reads: the file from
// off, at most 1 MiB - 1; a file under 4 bytes is refused.
func readDescriptorArea(f *image.Node, off int64) ([]byte, error) {
	size := f.Size()
	if size < 4 {
		return nil, errorf("File is too small, not a valid image")
	}
	size = min(size, 1<<20-1)
	b := make([]byte, size)
	if err := f.ReadPadded(b, off); err != nil {
		return nil, image.Errorf(err, "Could not read from file: %v", err)
	}
	return b, nil
}

// openSparse opens a KDMV or COWD file as the next extent. A KDMV header
// with no capacity but a descriptor returns that descriptor instead (only
// where allowDesc says the image's own file is being opened).
func (img *Image) openSparse(f *image.Node, head []byte, kind string, allowDesc bool) ([]byte, error) {
	switch string(head[:4]) {
	case magicCOWD:
		x, err := openCOWD(f, head)
		if err != nil {
			return nil, err
		}
		x.kind = kind
		img.addExtent(x)
		return nil, nil
	case magicKDMV:
	default:
		return nil, errorf("Image not in VMDK format")
	}
	if len(head) < 512 {
		head = append(head, make([]byte, 512-len(head))...)
	}
	h := parseHeader4(head)
	if h.capacity == 0 && h.descOffset != 0 {
		if !allowDesc {
			return nil, image.NotSupported("a VMDK extent holding a descriptor is not supported")
		}
		if h.descOffset > uint64(f.Size())/sectorSize {
			return nil, errorf("Could not read from file: Invalid argument")
		}
		desc, err := readDescriptorArea(f, int64(h.descOffset)*sectorSize)
		return desc, err
	}
	if img.createType == "" {
		img.createType = "monolithicSparse"
	}
	if h.gdOffset == gdAtEnd {
		var err error
		if h, err = readFooter(f); err != nil {
			return nil, err
		}
	}
	compressed := h.compressAlgo == compressZlib
	if h.version > 3 {
		return nil, image.Errorf(image.ErrUnsupported, "Unsupported VMDK version %d", h.version)
	}
	if h.numGTEsPerGT > 512 {
		return nil, errorf("L2 table size too big")
	}
	gdEntrySectors := uint64(h.numGTEsPerGT) * h.granularity
	if gdEntrySectors == 0 || uint32(gdEntrySectors) == 0 {
		return nil, errorf("L1 entry size is invalid")
	}
	// qemu keeps this product in 32 bits
	gdEntrySectors = uint64(uint32(gdEntrySectors))
	if uint64(f.Size())/sectorSize < h.grainOffset {
		return nil, errorf("File truncated, expecting at least %d bytes", int64(h.grainOffset*sectorSize))
	}
	x := &extent{file: f, kind: kind, sectors: int64(h.capacity), grainSectors: int64(h.granularity),
		gtEntries: int64(h.numGTEsPerGT), compressed: compressed, marker: h.flags&flagMarker != 0,
		zeroGrain: h.flags&flagZeroGrain != 0, version: h.version}
	gdEntries := (h.capacity + gdEntrySectors - 1) / gdEntrySectors
	if err := x.loadDirectory(int64(h.gdOffset), gdEntries, h.capacity); err != nil {
		return nil, err
	}
	if h.flags&flagRGD != 0 && h.rgdOffset != 0 {
		primary := x.gd
		if err := x.loadDirectory(int64(h.rgdOffset), gdEntries, h.capacity); err != nil {
			return nil, errorf("Could not read l1 backup table from extent '%s'", f.Filename)
		}
		x.rgd, x.gd = x.gd, primary
	}
	if compressed {
		img.createType = "streamOptimized"
		if x.grainSize() > maxBufferedGrain {
			return nil, image.NotSupported("compressed VMDK grains of %d bytes", x.grainSize())
		}
	}
	img.addExtent(x)
	return nil, nil
}

// readFooter reads the footer of a stream-optimized file, which takes
// precedence over its header: footer marker, footer, end-of-stream marker
// in the last three sectors... as qemu reads them, 1536 bytes from the end.
func readFooter(f *image.Node) (header4, error) {
	size := f.Size() &^ (sectorSize - 1)
	if size < 1536 {
		return header4{}, image.Errorf(syscall.EINVAL, "Invalid footer")
	}
	b := make([]byte, 1536)
	if err := f.ReadPadded(b, size-1536); err != nil {
		return header4{}, image.Errorf(err, "Failed to read footer: %v", err)
	}
	le := binary.LittleEndian
	footer, eos := b[:512], b[1024:]
	if string(b[512:516]) != magicKDMV || le.Uint32(footer[8:]) != 0 || le.Uint32(footer[12:]) != 3 ||
		le.Uint64(eos) != 0 || le.Uint32(eos[8:]) != 0 || le.Uint32(eos[12:]) != 0 {
		return header4{}, errorf("Invalid footer")
	}
	return parseHeader4(b[512:1024]), nil
}

// loadDirectory reads the grain directory: its size is bounded as qemu
// bounds it and, beyond qemu, must lie inside the file.
func (x *extent) loadDirectory(offsetSectors int64, entries, capacity uint64) error {
	if x.grainSectors > maxGrainSectors || x.grainSectors <= 0 {
		return image.Errorf(syscall.EFBIG, "Invalid granularity, image may be corrupt")
	}
	if entries > maxGDEntries {
		return image.Errorf(syscall.EFBIG, "L1 size too big")
	}
	if capacity > maxCapacity {
		return errorf("Invalid capacity %d, image may be corrupt", capacity)
	}
	if x.sectors == 0 {
		return nil
	}
	fileSize := x.file.Size()
	off := offsetSectors * sectorSize
	if offsetSectors < 0 || offsetSectors > fileSize/sectorSize || int64(entries)*4 > fileSize-off {
		return errorf("Could not read l1 table from extent '%s': Invalid argument", x.file.Filename)
	}
	raw := make([]byte, entries*4)
	if err := x.file.ReadPadded(raw, off); err != nil {
		return errorf("Could not read l1 table from extent '%s': %v", x.file.Filename, err)
	}
	x.gd = make([]uint32, entries)
	for i := range x.gd {
		x.gd[i] = binary.LittleEndian.Uint32(raw[i*4:])
	}
	x.tables = map[uint32][]uint32{}
	return nil
}

// openCOWD opens an ESX 2 sparse extent (VMDK3): 4096-entry grain tables.
func openCOWD(f *image.Node, head []byte) (*extent, error) {
	if len(head) < 512 {
		head = append(head, make([]byte, 512-len(head))...)
	}
	le := binary.LittleEndian
	sectors := le.Uint32(head[12:])
	granularity := le.Uint32(head[16:])
	gdOffset := le.Uint32(head[20:])
	gdSize := le.Uint32(head[24:])
	x := &extent{file: f, sectors: int64(sectors), grainSectors: int64(granularity), gtEntries: 4096}
	if err := x.loadDirectory(int64(gdOffset), uint64(gdSize), uint64(sectors)); err != nil {
		return nil, err
	}
	return x, nil
}

type grainKind int

const (
	grainUnallocated grainKind = iota
	grainZero
	grainData
	grainCompressed
)

type grain struct {
	kind grainKind
	host int64 // start of the grain in the file
}

// lookup finds the grain holding rel (bytes from the extent's start).
func (x *extent) lookup(rel int64) (grain, error) {
	if x.flat {
		return grain{kind: grainData, host: x.flatOffset}, nil
	}
	if x.se {
		return x.lookupSE(rel)
	}
	sector := rel / sectorSize
	gdIndex := x.gdIndex(rel)
	if gdIndex >= int64(len(x.gd)) {
		return grain{}, image.Errorf(syscall.EIO, "Input/output error")
	}
	gt := x.gd[gdIndex]
	if gt == 0 {
		return grain{kind: grainUnallocated}, nil
	}
	table, err := x.table(gt)
	if err != nil {
		return grain{}, err
	}
	entry := table[(sector/x.grainSectors)%x.gtEntries]
	switch {
	case x.zeroGrain && entry == 1:
		return grain{kind: grainZero}, nil
	case entry == 0:
		return grain{kind: grainUnallocated}, nil
	case x.compressed:
		return grain{kind: grainCompressed, host: int64(entry) * sectorSize}, nil
	}
	return grain{kind: grainData, host: int64(entry) * sectorSize}, nil
}

// gdIndex is the grain directory entry covering rel.
func (x *extent) gdIndex(rel int64) int64 {
	return rel / sectorSize / (x.gtEntries * x.grainSectors)
}

// table reads (or finds cached) the grain table at sector gt.
func (x *extent) table(gt uint32) ([]uint32, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if t, ok := x.tables[gt]; ok {
		return t, nil
	}
	raw := make([]byte, x.gtEntries*4)
	x.file.Event(image.EvL2Load)
	if err := x.file.ReadPadded(raw, int64(gt)*sectorSize); err != nil {
		return nil, err
	}
	t := make([]uint32, x.gtEntries)
	for i := range t {
		t[i] = binary.LittleEndian.Uint32(raw[i*4:])
	}
	if len(x.tables) >= tableCacheSize {
		clear(x.tables)
	}
	x.tables[gt] = t
	return t, nil
}

// readCompressed reads from the deflated grain at host, as qemu does: the
// grain marker's size (or a whole grain without markers) of zlib data
// within two grains, inflating to at most one grain.
func (x *extent) readCompressed(p []byte, host, rel int64) error {
	if rel%x.grainSize() == 0 && int64(len(p)) == x.grainSize() {
		// a whole grain (what a copy reads) inflates straight into p
		n, err := x.inflate(p, host)
		if err == nil && n < len(p) {
			err = image.Errorf(syscall.EINVAL, "Invalid argument")
		}
		return err
	}
	// grains are inflated outside the lock, on every reader's core; the
	// last one is kept (never modified) for reads smaller than a grain
	x.mu.Lock()
	g := x.lastGrain
	cached := g != nil && x.lastHost == host
	x.mu.Unlock()
	if !cached {
		g = make([]byte, x.grainSize())
		n, err := x.inflate(g, host)
		if err != nil {
			return err
		}
		g = g[:n]
		x.mu.Lock()
		x.lastGrain, x.lastHost = g, host
		x.mu.Unlock()
	}
	in := rel % x.grainSize()
	if in+int64(len(p)) > int64(len(g)) {
		return image.Errorf(syscall.EINVAL, "Invalid argument")
	}
	copy(p, g[in:])
	return nil
}

// blockStatus describes the run at guest offset off (inside x), grain by
// grain, merging grains of one kind (and contiguous data).
func (x *extent) blockStatus(off, length int64) (image.Extent, error) {
	rel := off - x.start
	if x.flat {
		return x.flatStatus(off, rel, length)
	}
	first, err := x.lookup(rel)
	if err != nil {
		return image.Extent{}, err
	}
	end := x.runEnd(rel)
	for end < rel+length {
		if i := x.gdIndex(end); first.kind == grainUnallocated && !x.se && i < int64(len(x.gd)) && x.gd[i] == 0 {
			// a missing grain table: its whole span is unallocated
			span := x.gtEntries * x.grainSize()
			end = min((end/span+1)*span, x.end())
			continue
		}
		g, err := x.lookup(end)
		if err != nil || g.kind != first.kind || g.kind == grainCompressed ||
			g.kind == grainData && g.host != first.host+end-rel+rel%x.grainSize() {
			break
		}
		end = x.runEnd(end)
	}
	e := image.Extent{Offset: off, Length: min(end, rel+length) - rel, HostOffset: -1}
	switch first.kind {
	case grainZero:
		e.Allocated, e.Zero = true, true
	case grainData:
		e.Allocated, e.Data = true, true
		e.HostOffset = first.host + rel%x.grainSize()
		e.Host = x.file
	case grainCompressed:
		e.Allocated, e.Data = true, true
		e.Host = x.file
	}
	return e, nil
}

// flatStatus asks the extent's file about the mapped range (qemu's
// BDRV_BLOCK_RECURSE): the run is data, and zero where the file says so.
func (x *extent) flatStatus(off, rel, length int64) (image.Extent, error) {
	host := x.flatOffset + rel
	e := image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: host, Host: x.file}
	if size := x.file.Size(); host >= size {
		e.Zero = true
	} else {
		fe, err := x.file.BlockStatus(host, min(length, size-host))
		if err != nil {
			return image.Extent{}, err
		}
		e.Length, e.Zero = fe.Length, fe.Zero
	}
	return e, nil
}
