// Package vhdx is the VHDX format driver (Hyper-V virtual hard disks, as
// described by MS-VHDX and handled by QEMU's block/vhdx.c): the two
// headers, the region table, the metadata region and the block allocation
// table (BAT) with its interleaved sector bitmap entries.
package vhdx

import (
	"errors"
	"math/bits"
	"syscall"

	"qimg/image"
)

func init() {
	image.Register(&image.Format{
		Name:  "vhdx",
		Probe: probe,
		Open:  Open,
	})
}

// probe is QEMU's vhdx_probe: the file identifier's signature.
func probe(head []byte, _ string) int {
	if len(head) >= 8 && string(head[:8]) == "vhdxfile" {
		return 100
	}
	return 0
}

// errNoHeader is QEMU's text when neither header is valid.
var errNoHeader = image.Errorf(image.ErrCorrupt, "No valid VHDX header found")

// Image is an open VHDX image.
type Image struct {
	file      *image.Node
	meta      *metadata
	bat       []byte // little-endian entries, decoded on use
	blockBits uint
	// chunkBits: one sector bitmap entry follows every 1<<chunkBits
	// payload entries.
	chunkBits uint
}

// Open opens a VHDX image read-only; writing is not supported yet.
func Open(o *image.OpenContext) (image.Driver, error) {
	if o.Writable {
		return nil, image.NotSupported("writing to vhdx images")
	}
	img, err := open(o.File, o.File.Size())
	if errors.Is(err, errNeedsReplay) {
		return nil, image.Errorf(syscall.EPERM, "VHDX image file '%s' opened read-only, but contains a log that needs to be replayed\nTo replay the log, run:\nqemu-img check -r all '%s'", o.Filename, o.Filename)
	}
	if err != nil {
		return nil, openError(o.Filename, err)
	}
	img.file = o.File
	return img, nil
}

// openError words a failure as qemu-img does: errors without their own
// text become "Could not open 'NAME': strerror".
func openError(filename string, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) && err == error(errno) {
		return image.Errorf(err, "Could not open '%s': %s", filename, image.Strerror(err))
	}
	return err
}

// open parses the image's metadata from r (a file of size bytes).
func open(r readerAt, size int64) (*Image, error) {
	sig := make([]byte, 8)
	if err := readFull(r, size, sig, 0); err != nil {
		return nil, err
	}
	if string(sig) != "vhdxfile" {
		return nil, syscall.EINVAL
	}
	h, _, err := selectHeader(r, size)
	if err != nil {
		return nil, err
	}
	rs := regions{{h.logOffset, h.logOffset + uint64(h.logLength)}}
	replay, err := checkLog(r, size, h)
	if err != nil {
		return nil, err
	}
	if replay {
		return nil, errNeedsReplay
	}
	rt := make([]byte, regionTableSize)
	if err := readFull(r, size, rt, regionTableOffset); err != nil {
		return nil, err
	}
	batRegion, metaRegion, err := parseRegionTable(rt, &rs)
	if err != nil {
		return nil, err
	}
	m, err := readMetadata(r, size, metaRegion)
	if err != nil {
		return nil, err
	}
	img := &Image{
		meta:      m,
		blockBits: uint(bits.TrailingZeros32(m.blockSize)),
		chunkBits: uint(bits.TrailingZeros64(m.chunkRatio())),
	}
	img.bat, err = readBAT(r, size, batRegion, m, rs)
	if err != nil {
		return nil, err
	}
	return img, nil
}

// errNeedsReplay stands for QEMU's refusal of a read-only open of an
// image whose log holds entries; Open words it with the file name.
var errNeedsReplay = errors.New("log needs replay")

// readBAT reads the BAT entries the virtual size needs, after checking
// that the BAT region holds them and lies within the file, and that no
// fully present payload block overlaps a metadata region.
func readBAT(r readerAt, size int64, batRegion regionEntry, m *metadata, rs regions) ([]byte, error) {
	n := m.batEntries()
	if n > uint64(batRegion.length)/8 {
		return nil, syscall.EINVAL
	}
	if batRegion.offset+n*8 > uint64(size) {
		return nil, syscall.EINVAL
	}
	raw := make([]byte, n*8)
	if err := readFull(r, size, raw, int64(batRegion.offset)); err != nil {
		return nil, err
	}
	ratio := m.chunkRatio()
	for i := uint64(0); i < n; i++ {
		e := le.Uint64(raw[8*i:])
		isPayload := i%(ratio+1) != ratio
		if isPayload && e&batStateMask == blockFullyPresent &&
			rs.overlaps(e&batFileOffsetMask, uint64(m.blockSize)) {
			return nil, syscall.EINVAL
		}
	}
	return raw, nil
}

func (img *Image) Size() int64 { return int64(img.meta.virtualSize) }

func (img *Image) Close() error { return nil }

// entry returns the BAT entry of the payload block holding guest offset
// off, and how many bytes of the block lie from off on.
func (img *Image) entry(off int64) (uint64, int64, error) {
	block := uint64(off) >> img.blockBits
	idx := block + block>>img.chunkBits
	if idx >= uint64(len(img.bat))/8 {
		return 0, 0, image.Errorf(syscall.EIO, "Input/output error")
	}
	bs := int64(1) << img.blockBits
	return le.Uint64(img.bat[8*idx:]), bs - off&(bs-1), nil
}

// ReadAt reads guest data block by block: present blocks from the file,
// absent and zero blocks as zeroes, as QEMU's vhdx_co_readv.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		e, avail, err := img.entry(off)
		if err != nil {
			return done, err
		}
		n := int(min(int64(len(p)-done), avail))
		chunk := p[done : done+n]
		switch e & batStateMask {
		case blockNotPresent, blockUndefined, blockUnmapped, blockUnmappedV095, blockZero:
			clear(chunk)
		case blockFullyPresent:
			host := int64(e&batFileOffsetMask) + off&(int64(1)<<img.blockBits-1)
			if err := img.file.ReadPadded(chunk, host); err != nil {
				return done, err
			}
		default:
			return done, image.Errorf(syscall.EIO, "Input/output error")
		}
		done += n
		off += int64(n)
	}
	return done, nil
}

// BlockStatus reports everything as allocated data without a host
// offset: QEMU 7.2's vhdx driver has no block status of its own, so its
// generic answer is what qemu-img map shows.
func (img *Image) BlockStatus(off, length int64) (image.Extent, error) {
	return image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: -1}, nil
}

// Info sets the cluster size (the block size), as qemu's vhdx_get_info.
func (img *Image) Info(info *image.Info) error {
	info.ClusterSize = int64(img.meta.blockSize)
	return nil
}
