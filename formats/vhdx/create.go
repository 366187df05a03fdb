package vhdx

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"syscall"
	"unicode/utf16"

	"qimg/formats/file"
	"qimg/image"
)

// createOptions are qemu-img's -o options for vhdx, in QEMU's order
// (which the "Formatting" line follows), then the file's.
var createOptions = []image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size; max of 64TB."},
	{Name: "log_size", Type: image.OptSize, Help: "Log size; min 1MB.", Default: "1048576"},
	{Name: "block_size", Type: image.OptSize, Help: "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.", Default: "0"},
	{Name: "subformat", Type: image.OptString, Help: "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'."},
	{Name: "block_state_zero", Type: image.OptBool, Help: "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to 'off' when using 'qemu-img convert' with subformat=dynamic."},
	{Name: "nocow", Type: image.OptBool, Help: "Turn off copy-on-write (valid only on btrfs)"},
	{Name: "preallocation", Type: image.OptString, Help: "Preallocation mode (allowed values: off, falloc, full)"},
	{Name: "extent_size_hint", Type: image.OptSize, Help: "Extent size hint for the image file, 0 to disable"},
}

const (
	mib          = 1 << 20
	maxImageSize = 64 << 40
	// creator is the file identifier's creator field, as qemu-img 7.2
	// writes it, so that created files match qemu-img's byte for byte
	// where QEMU is deterministic.
	creator = "QEMU v7.2.22"
	// headerSectionEnd is where the log starts in a created image.
	headerSectionEnd = 1 * mib
)

// createParams are the validated options of a create.
type createParams struct {
	size       uint64
	logSize    uint64
	blockSize  uint64
	fixed      bool
	zeroBlocks bool
}

// parseCreate applies QEMU's rounding (vhdx_co_create_opts) and checks
// (vhdx_co_create), with its words.
func parseCreate(o image.Options, size int64) (*createParams, error) {
	p := &createParams{size: roundUp(uint64(size), 512), zeroBlocks: o.Bool("block_state_zero", true)}
	if err := file.CheckPrealloc(o.String("preallocation", "off")); err != nil {
		return nil, err
	}
	switch o.String("subformat", "dynamic") {
	case "dynamic":
	case "fixed":
		p.fixed = true
	default:
		return nil, image.Errorf(image.ErrUnsupported, "Parameter 'subformat' does not accept value '%s'", o.String("subformat", ""))
	}
	if p.size > maxImageSize {
		return nil, image.Errorf(image.ErrUnsupported, "Image size too large; max of 64TB")
	}
	logSize, err := o.Size("log_size", mib)
	if err != nil {
		return nil, err
	}
	blockSize, err := o.Size("block_size", 0)
	if err != nil {
		return nil, err
	}
	p.logSize = roundUp(uint64(logSize), mib)
	if p.logSize > 0xffffffff {
		return nil, image.Errorf(image.ErrUnsupported, "Log size must be smaller than 4 GB")
	}
	if p.logSize < mib {
		return nil, image.Errorf(image.ErrUnsupported, "Log size must be a multiple of 1 MB")
	}
	p.blockSize = min(roundUp(uint64(blockSize), mib), blockSizeMax)
	if p.blockSize == 0 {
		p.blockSize = autoBlockSize(p.size)
	}
	if p.blockSize&(p.blockSize-1) != 0 {
		return nil, image.Errorf(image.ErrUnsupported, "Block size must be a power of two")
	}
	return p, nil
}

func roundUp(x, to uint64) uint64 { return (x + to - 1) / to * to }

// autoBlockSize is QEMU's choice of block size when none is given.
func autoBlockSize(size uint64) uint64 {
	switch {
	case size > 32<<40:
		return 64 * mib
	case size > 100<<30:
		return 32 * mib
	case size > 1<<30:
		return 16 * mib
	}
	return 8 * mib
}

func checkCreate(o image.Options, size int64) error {
	_, err := parseCreate(o, size)
	return err
}

// layout is where a created image keeps its parts.
type layout struct {
	batOffset, batLength uint64
	metaOffset           uint64
	dataOffset           uint64 // first payload block (and the file's size when dynamic)
}

func (p *createParams) layout(m *metadata) layout {
	var l layout
	l.batOffset = roundUp(headerSectionEnd+p.logSize, mib)
	l.batLength = roundUp(m.batEntries()*8, mib)
	l.metaOffset = roundUp(l.batOffset+l.batLength, mib)
	// QEMU leaves room after the BAT: 1 MiB of metadata and 4 MiB spare
	l.dataOffset = l.batOffset + l.batLength + 5*mib
	return l
}

// Create writes a new VHDX image as qemu-img 7.2 does: file identifier,
// both headers, the BAT (whose size the region table gives), both region
// tables and the metadata region; fixed images get their payload blocks
// laid out after the metadata.
func Create(c *image.CreateContext) error {
	p, err := parseCreate(c.Options, c.Size)
	if err != nil {
		return err
	}
	if f, ok := c.File.Driver().(*file.File); ok && c.Options.Bool("nocow", false) {
		f.SetNoCOW()
	}
	m := &metadata{blockSize: uint32(p.blockSize), virtualSize: p.size, logicalSectorSize: 512, physicalSectorSize: 512}
	if p.fixed {
		m.paramBits = paramLeaveBlocksAllocated
	}
	l := p.layout(m)
	if c.File.WriteOnce() {
		// sized first for every block: the upload's parts are then large
		// enough for the headers, log, BAT and metadata to stay in the first
		if err := c.File.Truncate(int64(l.dataOffset+roundUp(p.size, p.blockSize)), image.PreallocOff); err != nil {
			return err
		}
	}
	// the file takes its final size first: the parts are written inside it
	end := l.dataOffset
	if p.fixed {
		end += p.size
	}
	err = c.File.Truncate(int64(end), image.PreallocOff)
	if errors.Is(err, syscall.EFBIG) {
		return image.Errorf(err, "The image size is too large for file format 'vhdx'")
	}
	if err != nil {
		return err
	}
	regions := regionTable(l)
	// each step fails in qemu's words for it
	steps := []struct {
		failure string
		write   func() error
	}{
		{"Failed to write file signature", func() error { return writeFileID(c.File) }},
		{"Failed to write image headers", func() error { return writeNewHeaders(c.File, p.logSize) }},
		{"Failed to write the BAT", func() error { return writeNewBAT(c.File, p, m, l) }},
		{"Failed to write first region table", func() error { return writeAt(c.File, regions, regionTableOffset) }},
		{"Failed to write second region table", func() error { return writeAt(c.File, regions, regionTableOffset+regionTableSize) }},
		{"Failed to initialize metadata", func() error { return writeMetadata(c.File, m, l.metaOffset) }},
	}
	for _, step := range steps {
		if err := step.write(); err != nil {
			return image.IOError(step.failure, err)
		}
	}
	return nil
}

// inOrder: a vhdx image can be written onto a write-once node (an S3
// upload) as the driver writes it: headers, log, BAT and metadata lie in
// the upload's first part, kept in memory and sent last, and payload
// blocks are appended in the order the data comes. A log larger than
// qemu's 1 MiB could push them past S3's smallest part.
func inOrder(o image.Options) error {
	p, err := parseCreate(o, 0)
	if err != nil {
		return err
	}
	if p.logSize != mib {
		return image.Errorf(image.ErrUnsupported, "vhdx images with a log_size other than 1 MiB cannot be written to S3 yet, where objects are written once, in order")
	}
	return nil
}

func writeAt(n *image.Node, b []byte, off uint64) error {
	_, err := n.WriteAt(b, int64(off))
	return err
}

func writeFileID(n *image.Node) error {
	b := []byte("vhdxfile")
	for _, u := range utf16.Encode([]rune(creator)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return writeAt(n, append(b, 0, 0), 0)
}

func randomGUID() guid {
	var g guid
	rand.Read(g[:])
	g[7] = g[7]&0x0f | 0x40 // version 4, as QEMU's generated GUIDs
	g[8] = g[8]&0x3f | 0x80
	return g
}

// writeNewHeaders writes both headers, the second one's sequence number
// one higher, as QEMU does on create.
func writeNewHeaders(n *image.Node, logSize uint64) error {
	var seq [4]byte
	rand.Read(seq[:])
	h := &header{
		seq:           uint64(le.Uint32(seq[:])),
		fileWriteGUID: randomGUID(),
		dataWriteGUID: randomGUID(),
		version:       1,
		logLength:     uint32(logSize),
		logOffset:     headerSectionEnd,
	}
	if err := writeAt(n, h.encode(), header1Offset); err != nil {
		return err
	}
	h.seq++
	return writeAt(n, h.encode(), header2Offset)
}

// encode makes the 4 KiB header block with its checksum.
func (h *header) encode() []byte {
	b := make([]byte, headerSize)
	copy(b, "head")
	le.PutUint64(b[8:], h.seq)
	copy(b[16:], h.fileWriteGUID[:])
	copy(b[32:], h.dataWriteGUID[:])
	copy(b[48:], h.logGUID[:])
	le.PutUint16(b[64:], h.logVersion)
	le.PutUint16(b[66:], h.version)
	le.PutUint32(b[68:], h.logLength)
	le.PutUint64(b[72:], h.logOffset)
	le.PutUint32(b[4:], crc32c(b))
	return b
}

// writeNewBAT fills the BAT as QEMU's vhdx_create_bat:
// every payload entry ZERO with block_state_zero, FULLY_PRESENT at its
// place for fixed images, and nothing written for a dynamic image without
// zero blocks (the file reads as zeroes).
func writeNewBAT(n *image.Node, p *createParams, m *metadata, l layout) error {
	if !p.fixed && !p.zeroBlocks {
		return nil
	}
	// QEMU writes the BAT in one request, which cannot reach 2 GiB
	if l.batLength > maxRequest {
		return syscall.EIO
	}
	ratio := m.chunkRatio()
	buf := make([]byte, min(l.batLength, batWriteChunk))
	for start := uint64(0); start < l.batLength; start += uint64(len(buf)) {
		clear(buf)
		for k := uint64(0); k < uint64(len(buf))/8; k++ {
			idx := start/8 + k
			if idx%(ratio+1) == ratio {
				continue // sector bitmap entry
			}
			block := idx - idx/(ratio+1)
			if block*p.blockSize >= p.size {
				break
			}
			entry := uint64(blockFullyPresent) | roundUp(l.dataOffset+block*p.blockSize, mib)
			if p.zeroBlocks {
				entry = blockZero
			}
			le.PutUint64(buf[8*k:], entry)
		}
		if err := writeAt(n, buf, l.batOffset+start); err != nil {
			return err
		}
	}
	return nil
}

const (
	batWriteChunk = 1 * mib
	maxRequest    = 1<<31 - 512 // QEMU's BDRV_REQUEST_MAX_BYTES
)

// regionTable makes the region table (BAT and metadata), written twice.
func regionTable(l layout) []byte {
	b := make([]byte, regionTableSize)
	copy(b, "regi")
	le.PutUint32(b[8:], 2)
	for i, e := range []struct {
		g      guid
		offset uint64
		length uint64
	}{{batGUID, l.batOffset, l.batLength}, {metadataGUID, l.metaOffset, mib}} {
		r := b[16+32*i:]
		copy(r, e.g[:])
		le.PutUint64(r[16:], e.offset)
		le.PutUint32(r[24:], uint32(e.length))
		// QEMU leaves the entries' Required bit clear
	}
	le.PutUint32(b[4:], crc32c(b))
	return b
}

// writeMetadata writes the metadata table and its five items.
func writeMetadata(n *image.Node, m *metadata, offset uint64) error {
	const itemsAt = 64 << 10
	table := make([]byte, metadataTableSize)
	copy(table, "metadata")
	le.PutUint16(table[10:], 5)
	items := make([]byte, 40)
	le.PutUint32(items[0:], m.blockSize)
	le.PutUint32(items[4:], m.paramBits)
	le.PutUint64(items[8:], m.virtualSize)
	page83 := randomGUID()
	copy(items[16:], page83[:])
	le.PutUint32(items[32:], m.logicalSectorSize)
	le.PutUint32(items[36:], m.physicalSectorSize)
	entries := []struct {
		g             guid
		offset, size  uint32
		isVirtualDisk bool
	}{
		{fileParamGUID, 0, 8, false},
		{virtualSizeGUID, 8, 8, true},
		{page83GUID, 16, 16, true},
		{logicalSectorGUID, 32, 4, true},
		{physSectorGUID, 36, 4, true},
	}
	for i, e := range entries {
		t := table[32+32*i:]
		copy(t, e.g[:])
		le.PutUint32(t[16:], itemsAt+e.offset)
		le.PutUint32(t[20:], e.size)
		flags := uint32(4) // IsRequired
		if e.isVirtualDisk {
			flags |= 2
		}
		le.PutUint32(t[24:], flags)
	}
	if err := writeAt(n, table, offset); err != nil {
		return err
	}
	return writeAt(n, items, offset+itemsAt)
}
