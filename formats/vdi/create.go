package vdi

import (
	"crypto/rand"

	"qimg/formats/file"
	"qimg/image"
)

// createOptions are vdi's options followed by the file protocol's, in the
// order qemu-img's "Formatting" line prints them.
var createOptions = []image.OptionSpec{
	{Name: "size", Type: image.OptSize, Help: "Virtual disk size"},
	{Name: "static", Type: image.OptBool, Help: "VDI static (pre-allocated) image", Default: "off"},
	{Name: "nocow", Type: image.OptBool, Help: "Turn off copy-on-write (valid only on btrfs)"},
	{Name: "preallocation", Type: image.OptString, Help: "Preallocation mode (allowed values: off, falloc, full)"},
	{Name: "extent_size_hint", Type: image.OptSize, Help: "Extent size hint for the image file, 0 to disable"},
}

// checkCreate refuses what qemu refuses before touching the file: a
// preallocation mode the file protocol lacks and sizes above VDI's limit.
// The preallocation option goes to the file, which qemu creates empty, so
// it has no effect beyond its check.
func checkCreate(o image.Options, size int64) error {
	if err := file.CheckPrealloc(o.String("preallocation", "off")); err != nil {
		return err
	}
	if bytes := roundSector(size); uint64(bytes) > maxDiskSize {
		return image.Errorf(image.ErrUnsupported, "Unsupported VDI image size (size is 0x%x, max supported is 0x%x)", bytes, maxDiskSize)
	}
	return nil
}

func roundSector(n int64) int64 { return (n + sectorSize - 1) &^ (sectorSize - 1) }

// Create writes the header and block map qemu writes: the size rounded up
// to whole sectors, every block allocated in order for static images (the
// file sized to hold them, sparse), none for dynamic ones.
func Create(c *image.CreateContext) error {
	if err := checkCreate(c.Options, c.Size); err != nil {
		return err
	}
	if f, ok := c.File.Driver().(*file.File); ok && c.Options.Bool("nocow", false) {
		f.SetNoCOW()
	}
	static := c.Options.Bool("static", false)
	h := newHeader(roundSector(c.Size), static)
	bmap := make([]byte, h.bmapBytes())
	for i := uint32(0); i < h.blocksInImage; i++ {
		entry := uint32(unallocated)
		if static {
			entry = i
		}
		le.PutUint32(bmap[4*i:], entry)
	}
	if c.File.WriteOnce() {
		// sized first for every block: the upload's parts are then large
		// enough for the block map to stay in the first one
		if err := c.File.Truncate(int64(h.offsetData)+int64(h.blocksInImage)*blockSize, image.PreallocOff); err != nil {
			return err
		}
	}
	// the file grows to hold the metadata, and for static images every
	// block, before anything is written (it stays sparse)
	end := int64(h.offsetData)
	if static {
		end += int64(h.blocksInImage) * blockSize
	}
	if err := c.File.Truncate(end, image.PreallocOff); err != nil {
		if static {
			return image.Errorf(err, "Failed to statically allocate file%v", err)
		}
		return err
	}
	// qemu's words, without the errno
	if _, err := c.File.WriteAt(h.encode(), 0); err != nil {
		return image.Errorf(err, "Error writing header")
	}
	if len(bmap) > 0 {
		if _, err := c.File.WriteAt(bmap, headerSize); err != nil {
			return image.Errorf(err, "Error writing block map")
		}
	}
	return nil
}

// inOrder: a vdi image can be written onto a write-once node (an S3
// upload) as the driver writes it: the header and block map lie in the
// upload's first part, kept in memory and sent last, and blocks are
// appended in the order the data comes.
func inOrder(image.Options) error { return nil }

// newHeader builds the header qemu's vdi_co_do_create writes, with fresh
// random image and snapshot UUIDs.
func newHeader(size int64, static bool) *header {
	h := &header{
		imageType:     typeDynamic,
		offsetBmap:    headerSize,
		sectorSize:    sectorSize,
		diskSize:      uint64(size),
		blockSize:     blockSize,
		blocksInImage: uint32((size + blockSize - 1) / blockSize),
	}
	if static {
		h.imageType = typeStatic
		h.blocksAllocated = h.blocksInImage
	}
	h.offsetData = uint32(headerSize + h.bmapBytes())
	b := h.raw[:]
	copy(b, headerText)
	le.PutUint32(b[0x40:], signature)
	le.PutUint32(b[0x44:], version11)
	le.PutUint32(b[0x48:], qemuHdrSize)
	le.PutUint32(b[0x4c:], h.imageType)
	le.PutUint32(b[0x154:], h.offsetBmap)
	le.PutUint32(b[0x158:], h.offsetData)
	le.PutUint32(b[0x168:], h.sectorSize)
	le.PutUint64(b[0x170:], h.diskSize)
	le.PutUint32(b[0x178:], h.blockSize)
	le.PutUint32(b[0x180:], h.blocksInImage)
	putUUID(b[0x188:0x198])
	putUUID(b[0x198:0x1a8])
	return h
}

// putUUID stores a random version 4 UUID the way qemu does: generated in
// RFC 4122 byte order, then its first three fields swapped to little
// endian.
func putUUID(b []byte) {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	b[0], b[1], b[2], b[3] = u[3], u[2], u[1], u[0]
	b[4], b[5] = u[5], u[4]
	b[6], b[7] = u[7], u[6]
	copy(b[8:], u[8:])
}
