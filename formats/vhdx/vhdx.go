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
		InOrder:       inOrder,
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
	// rw is the file when open for writing, else nil. sessionGUID is the
	// file write GUID of this open; wroteData says whether the data write
	// GUID has been renewed; replayed that the open replayed the log.
	rw          fileRW
	mu          sync.Mutex
	sessionGUID guid
	wroteData   bool
	replayed    bool
	log         logWriter
	blockBits   uint
	// chunkBits: one sector bitmap entry follows every 1<<chunkBits
	// payload entries.
	chunkBits uint
	// scratch is the memory of metadata updates, used under mu or while
	// opening.
	scratch scratch
}

// logWriter is where the next log entry goes, as QEMU's VHDXLogEntries:
// the ring, the window of entries not yet emptied, the tail (where the
// last entry began) and the next sequence number.
type logWriter struct {
	ring     *logRing
	window   logWindow
	tail     uint32
	sequence uint64
}

// Open opens a VHDX image. A writable open replays a log left with
// entries, as QEMU does, and a read-only open refuses such an image. The
// headers change only with the first write (qemu-img 7.2 writes nothing
// on a read/write open either).
func Open(o *image.OpenContext) (image.Driver, error) {
	var rw fileRW
	if o.Writable {
		rw = nodeFile{o.File}
	}
	img, err := open(o.File, rw)
	if err == nil && !o.Check {
		// a check reports these; anything else refuses the image
		_, err = img.checkBATEntries(false, io.Discard)
	}
	if errors.Is(err, errNeedsReplay) {
		return nil, image.Errorf(syscall.EPERM, "VHDX image file '%s' opened read-only, but contains a log that needs to be replayed\nTo replay the log, run:\nqemu-img check -r all '%s'", o.Filename, o.Filename)
	}
	if err != nil {
		return nil, openError(o.Filename, err)
	}
	return img, nil
}

// storage is the image file: the protocol node, or a file in memory for
// the fuzz targets.
type storage interface {
	readerAt
	Size() int64
}

// fileRW is the image file open for writing; writes may grow it.
type fileRW interface {
	storage
	WriteAt(p []byte, off int64) error
	Flush() error
	Truncate(size int64) error
}

// nodeFile is the protocol node as a fileRW.
type nodeFile struct{ n *image.Node }

func (f nodeFile) ReadAt(p []byte, off int64) (int, error) { return f.n.ReadAt(p, off) }
func (f nodeFile) Size() int64                             { return f.n.Size() }
func (f nodeFile) WriteAt(p []byte, off int64) error       { return f.n.WriteGrowing(p, off) }
func (f nodeFile) Flush() error                            { return f.n.Flush() }
func (f nodeFile) Truncate(size int64) error               { return f.n.Truncate(size, image.PreallocOff) }

// openError words a failure as qemu-img does: errors without their own
// text become "Could not open 'NAME': strerror".
func openError(filename string, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) && err == error(errno) {
		return image.Errorf(err, "Could not open '%s': %s", filename, image.Strerror(err))
	}
	return err
}

// open parses the image's metadata from r, in QEMU's vhdx_open order. With
// rw (the same file, writable) a log with entries is replayed first;
// without, such an image is errNeedsReplay.
func open(r storage, rw fileRW) (*Image, error) {
	sig := make([]byte, 8)
	if err := readFull(r, r.Size(), sig, 0); err != nil {
		return nil, err
	}
	if string(sig) != "vhdxfile" {
		return nil, syscall.EINVAL
	}
	h, current, err := selectHeader(r, r.Size())
	if err != nil {
		return nil, err
	}
	img := &Image{file: r, rw: rw, header: h, current: current, sessionGUID: randomGUID()}
	if err := img.openLog(); err != nil {
		return nil, err
	}
	size := r.Size()
	rs := regions{{h.logOffset, h.logOffset + uint64(h.logLength)}}
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
	img.regions = rs
	img.meta = m
	img.batOffset = batRegion.offset
	img.batEntries = m.batEntries()
	img.blockBits = uint(bits.TrailingZeros32(m.blockSize))
	img.chunkBits = uint(bits.TrailingZeros64(m.chunkRatio()))
	return img, nil
}

// openLog checks the log and replays the entries it holds, if any and if
// the image is open for writing (QEMU's vhdx_parse_log). The next entry
// qimg writes then goes at the start of the log.
func (img *Image) openLog() error {
	st, err := parseLog(img.file, img.header)
	if err != nil {
		return err
	}
	img.log = logWriter{ring: st.ring}
	if !st.pending.valid {
		return nil
	}
	if img.rw == nil {
		return errNeedsReplay
	}
	img.log.sequence = st.pending.firstSeq + 1
	if _, err := img.replay(st.pending.window, st.pending.count); err != nil {
		return err
	}
	img.replayed = true
	return nil
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

// HoleBlocks: a new payload block is a hole at the end of the file, and
// only what is written into it takes space, as with QEMU.
func (img *Image) HoleBlocks() {}
