// Package vhdx is the VHDX format driver (Hyper-V virtual hard disks, as
// described by MS-VHDX and handled by QEMU's block/vhdx.c): the two
// headers, the region table, the metadata region and the block allocation
// table (BAT) with its interleaved sector bitmap entries.
package vhdx

import (
	"errors"
	"io"
	"math/bits"
	"sync"
	"syscall"

	"qimg/image"
)

func init() {
	image.Register(&image.Format{
		Name:          "vhdx",
		Probe:         probe,
		Open:          Open,
		CreateOptions: createOptions,
		Create:        Create,
		CheckCreate:   checkCreate,
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
	file storage
	meta *metadata
	// The BAT is read entry by entry when needed: one entry covers a
	// block of at least 1 MiB, and no header field decides an allocation.
	batOffset  uint64
	batEntries uint64
	regions    regions // the log, BAT and metadata regions

	// header is the current header, in slot current (0 or 1).
	header  *header
	current int
	// write state: the session's file write GUID, whether guest data
	// has been written since the open, the next log sequence number
	node        *image.Node // the file, when open for writing
	mu          sync.Mutex
	sessionGUID guid
	wroteData   bool
	logSequence uint64
	blockBits   uint
	// chunkBits: one sector bitmap entry follows every 1<<chunkBits
	// payload entries.
	chunkBits uint
}

// Open opens a VHDX image. A writable open records a new file write GUID
// in the headers, as QEMU does.
func Open(o *image.OpenContext) (image.Driver, error) {
	img, err := open(o.File)
	if err == nil && !o.Check {
		// a check reports these; anything else refuses the image
		_, err = img.checkBATEntries(false, io.Discard)
	}
	if errors.Is(err, errNeedsReplay) && o.Writable {
		return nil, image.NotSupported("replaying the log of vhdx image '%s'", o.Filename)
	}
	if errors.Is(err, errNeedsReplay) {
		return nil, image.Errorf(syscall.EPERM, "VHDX image file '%s' opened read-only, but contains a log that needs to be replayed\nTo replay the log, run:\nqemu-img check -r all '%s'", o.Filename, o.Filename)
	}
	if err != nil {
		return nil, openError(o.Filename, err)
	}
	if o.Writable {
		if err := img.startWriting(o.File); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// storage is the image file: the protocol node, or a file in memory for
// the fuzz targets.
type storage interface {
	readerAt
	Size() int64
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

// open parses the image's metadata from r.
func open(r storage) (*Image, error) {
	size := r.Size()
	sig := make([]byte, 8)
	if err := readFull(r, size, sig, 0); err != nil {
		return nil, err
	}
	if string(sig) != "vhdxfile" {
		return nil, syscall.EINVAL
	}
	h, current, err := selectHeader(r, size)
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
	if m.batEntries() > uint64(batRegion.length)/8 {
		return nil, syscall.EINVAL // the BAT region is too small
	}
	img := &Image{
		header:     h,
		current:    current,
		regions:    rs,
		file:       r,
		meta:       m,
		batOffset:  batRegion.offset,
		batEntries: m.batEntries(),
		blockBits:  uint(bits.TrailingZeros32(m.blockSize)),
		chunkBits:  uint(bits.TrailingZeros64(m.chunkRatio())),
	}
	return img, nil
}

// errNeedsReplay stands for QEMU's refusal of a read-only open of an
// image whose log holds entries; Open words it with the file name.
var errNeedsReplay = errors.New("log needs replay")

func (img *Image) Size() int64 { return int64(img.meta.virtualSize) }

func (img *Image) Close() error { return nil }

// entry returns the BAT entry of the payload block holding guest offset
// off, and how many bytes of the block lie from off on.
func (img *Image) entry(off int64) (uint64, int64, error) {
	block := uint64(off) >> img.blockBits
	idx := block + block>>img.chunkBits
	if idx >= img.batEntries {
		return 0, 0, image.Errorf(syscall.EIO, "Input/output error")
	}
	var b [8]byte
	if err := readFull(img.file, img.file.Size(), b[:], int64(img.batOffset+8*idx)); err != nil {
		return 0, 0, err
	}
	bs := int64(1) << img.blockBits
	return le.Uint64(b[:]), bs - off&(bs-1), nil
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
			if err := readFull(img.file, img.file.Size(), chunk, host); err != nil {
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
