// Package cloop is the read-only driver for cloop (compressed loop)
// images: a shell-script head, the block size and count, a table of
// n+1 offsets, and each block compressed with zlib on its own.
package cloop

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"io"
	"sync"

	"qimg/image"
)

const (
	formatName = "cloop"
	tableStart = 128 + 4 + 4
	// maxBlockSize is qemu's cap on the uncompressed block size; a
	// compressed block may be at most twice that.
	maxBlockSize = 64 << 20
	// maxOffsets is qemu's cap on the offsets table, in bytes.
	maxOffsets = 512 << 20
)

func init() {
	// the placeholder's probe (qemu's cloop_probe) stays
	image.Register(&image.Format{Name: formatName, Open: Open})
}

// Cloop is an open cloop image.
type Cloop struct {
	file      *image.Node
	blockSize uint32
	nBlocks   uint32
	// offsets holds the entries of the table that lie in the file; the
	// rest read as zeroes (qemu reads past the end as zeroes) and are
	// then all zero, or the table would not be monotonic.
	offsets []uint64

	mu      sync.Mutex
	current int64 // the block in cached, -1 for none
	cached  []byte
}

// Open reads and validates the header and the offsets table with qemu's
// checks and words. The table is read only as far as the file goes, so
// memory follows the file's real size, not the header's claims.
func Open(o *image.OpenContext) (image.Driver, error) {
	if o.Writable && !o.Check {
		return nil, image.Errorf(image.ErrReadOnly, "Image is read-only")
	}
	var head [8]byte
	if err := readPadded(o.File, head[:], 128); err != nil {
		return nil, err
	}
	c := &Cloop{
		file:      o.File,
		blockSize: binary.BigEndian.Uint32(head[0:]),
		nBlocks:   binary.BigEndian.Uint32(head[4:]),
		current:   -1,
	}
	if err := c.checkSizes(); err != nil {
		return nil, err
	}
	if err := c.readOffsets(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cloop) checkSizes() error {
	switch {
	case c.blockSize%512 != 0:
		return image.Errorf(image.ErrCorrupt, "block_size %d must be a multiple of 512", c.blockSize)
	case c.blockSize == 0:
		return image.Errorf(image.ErrCorrupt, "block_size cannot be zero")
	case c.blockSize > maxBlockSize:
		return image.Errorf(image.ErrCorrupt, "block_size %d must be %d MB or less", c.blockSize, maxBlockSize>>20)
	}
	const maxN = (1<<32 - 1 - 1) / 8
	if c.nBlocks > maxN {
		return image.Errorf(image.ErrCorrupt, "n_blocks %d must be %d or less", c.nBlocks, maxN)
	}
	if (uint64(c.nBlocks)+1)*8 > maxOffsets {
		return image.Errorf(image.ErrCorrupt, "image requires too many offsets, try increasing block size")
	}
	return nil
}

// readOffsets loads the part of the table inside the file and checks
// every entry (including the implied zeroes past the end) as qemu does.
func (c *Cloop) readOffsets() error {
	entries := int64(c.nBlocks) + 1
	inFile := min(entries, max(0, (c.file.Size()-tableStart+7)/8))
	raw := make([]byte, 8*inFile)
	if err := readPadded(c.file, raw, tableStart); err != nil {
		return err
	}
	c.offsets = make([]uint64, inFile)
	for i := range c.offsets {
		c.offsets[i] = binary.BigEndian.Uint64(raw[8*i:])
		if i == 0 {
			continue
		}
		if err := checkStep(c.offsets[i-1], c.offsets[i], i); err != nil {
			return err
		}
	}
	if inFile > 0 && inFile < entries {
		return checkStep(c.offsets[inFile-1], 0, int(inFile))
	}
	return nil
}

// checkStep checks entry i against entry i-1.
func checkStep(prev, cur uint64, i int) error {
	if cur < prev {
		return image.Errorf(image.ErrCorrupt, "offsets not monotonically increasing at index %d, image file is corrupt", i)
	}
	if cur-prev > 2*maxBlockSize {
		return image.Errorf(image.ErrCorrupt, "invalid compressed block size at index %d, image file is corrupt", i)
	}
	return nil
}

// offset is entry i of the table; entries past the file are zero.
func (c *Cloop) offset(i int64) uint64 {
	if i < int64(len(c.offsets)) {
		return c.offsets[i]
	}
	return 0
}

// readPadded reads p at off; what lies past the file's end reads as zeroes.
func readPadded(f *image.Node, p []byte, off int64) error {
	clear(p)
	size := f.Size()
	if off >= size || len(p) == 0 {
		return nil
	}
	n := min(int64(len(p)), size-off)
	_, err := f.ReadAt(p[:n], off)
	return err
}

func (c *Cloop) Size() int64 { return int64(c.nBlocks) * int64(c.blockSize) }

// loadBlock decompresses block i into the cache. The block must inflate
// to exactly block_size bytes and end its stream, else it is an I/O error
// as in qemu.
func (c *Cloop) loadBlock(i int64) error {
	if c.current == i {
		return nil
	}
	c.current = -1
	start := c.offset(i)
	length := c.offset(i+1) - start // at most 2*maxBlockSize, checked at open
	if start > 1<<62 {
		return errIO
	}
	// only the part inside the file is read; qemu reads the rest as zeroes
	inFile := uint64(max(0, c.file.Size()-int64(start)))
	comp := make([]byte, min(length, inFile))
	if err := readPadded(c.file, comp, int64(start)); err != nil {
		return err
	}
	if c.cached == nil {
		c.cached = make([]byte, c.blockSize)
	}
	in := io.MultiReader(bytes.NewReader(comp), io.LimitReader(zeroes{}, int64(length)-int64(len(comp))))
	if err := inflateExact(in, c.cached); err != nil {
		return err
	}
	c.current = i
	return nil
}

// inflateExact inflates a zlib stream that must fill out exactly.
func inflateExact(comp io.Reader, out []byte) error {
	zr, err := zlib.NewReader(comp)
	if err != nil {
		return errIO
	}
	if _, err := io.ReadFull(zr, out); err != nil {
		return errIO
	}
	var extra [1]byte
	if n, err := zr.Read(extra[:]); n != 0 || err != io.EOF {
		return errIO
	}
	return nil
}

func (c *Cloop) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	bs := int64(c.blockSize)
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		if err := c.loadBlock(pos / bs); err != nil {
			return done, err
		}
		done += copy(p[done:], c.cached[pos%bs:])
	}
	return done, nil
}

// BlockStatus: qemu's cloop driver has no block status, so everything
// reads as data without a fixed place.
func (c *Cloop) BlockStatus(off, length int64) (image.Extent, error) {
	return image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: -1}, nil
}

func (c *Cloop) Close() error { return nil }

// InfoLess: qemu's cloop driver has no get_info, so info shows no dirty flag.
func (c *Cloop) InfoLess() {}

// zeroes reads as an endless run of zero bytes.
type zeroes struct{}

func (zeroes) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// errIO is qemu's EIO as qemu-img words it.
var errIO = image.Errorf(image.ErrCorrupt, "Input/output error")
