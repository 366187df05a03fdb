// Package vpc is the VPC (VHD) format driver of Connectix / Microsoft
// Virtual PC, Hyper-V and Azure: fixed images (raw data and a footer) and
// dynamic ones (a block allocation table, a sector bitmap before each
// block), read, written and created as QEMU 7.2 does.
package vpc

import (
	"encoding/binary"
	"math"
	"sync"
	"syscall"

	"qimg/image"
)

func init() {
	image.Register(&image.Format{
		Name:          "vpc",
		Probe:         probe,
		Open:          Open,
		CreateOptions: createOptions,
		Create:        Create,
		CheckCreate:   checkCreate,
		InOrder:       inOrder,
		// how the virtual size is computed: chs or current_size
		OpenOptions: []image.OptionSpec{{Name: "force_size_calc", Type: image.OptString, Help: "Force disk size calculation to use either CHS geometry, or use the disk current_size specified in the VHD footer. {chs, current_size}"}},
		NameOptions: []string{"force_size_calc"},
	})
}

// probe: only a dynamic image starts with the footer; fixed ones probe
// as raw, as in QEMU.
func probe(head []byte, _ string) int {
	if len(head) >= 8 && string(head[:8]) == "conectix" {
		return 100
	}
	return 0
}

// Image is an open VPC image.
type Image struct {
	file   *image.Node
	footer footer
	fixed  bool
	size   int64

	// dynamic images only
	blockSize  int64
	bitmapSize int64
	batOffset  int64

	mu  sync.Mutex // guards what follows and orders allocations
	bat []uint32
	// freeOffset is where the next block goes and the footer lies.
	freeOffset int64
	// lastBitmap is the bitmap last set on a write, -1 for none.
	lastBitmap int64
	// writeOnce: the image is written in file order (stream.go); the
	// footer is written once, at the end.
	writeOnce bool
}

// Open reads the footer (at the start of a dynamic image, at the end of a
// fixed one) and, for a dynamic image, its header and BAT.
func Open(o *image.OpenContext) (image.Driver, error) {
	calc, err := parseSizeCalc(o.Options)
	if err != nil {
		return nil, err
	}
	file := o.File
	fileSize := file.Size()
	buf := make([]byte, footerSize)
	if err := file.ReadPadded(buf, 0); err != nil {
		return nil, err
	}
	fixed := false
	if string(buf[:8]) != string(footerMagic) {
		if fileSize < footerSize {
			return nil, image.Errorf(image.ErrWrongFormat, "invalid VPC image")
		}
		if err := file.ReadPadded(buf, fileSize-footerSize); err != nil {
			return nil, err
		}
		// a footer only at the end must say fixed: nothing else describes
		// a disk without a header
		if string(buf[:8]) != string(footerMagic) || binary.BigEndian.Uint32(buf[offDiskType:]) != diskFixed {
			return nil, image.Errorf(image.ErrWrongFormat, "invalid VPC image")
		}
		fixed = true
	}
	img := &Image{file: file, footer: parseFooter(buf), lastBitmap: -1}
	if !img.footer.checksumOK() {
		return nil, image.Errorf(image.ErrCorrupt, "Incorrect header checksum")
	}
	sectors := img.footer.totalSectors(calc)
	if sectors > vhdMaxSectors {
		// an errno without words: QEMU names the file a second time
		return nil, image.Errorf(syscall.EFBIG, "Could not open '%s': File too large", o.Filename)
	}
	img.size = sectors * 512
	img.fixed = img.footer.diskType == diskFixed
	if fixed {
		return img, nil
	}
	stream := o.Writable && file.WriteOnce() // stream.go: a new image onto S3
	if stream && img.fixed {
		return openInOrder(img) // its footer still at the head
	}
	if err := img.openDynamic(fileSize); err != nil {
		return nil, err
	}
	if stream {
		return openInOrder(img)
	}
	return img, nil
}

// parseSizeCalc reads force_size_calc from the driver's open options, in
// qemu's words when its value is neither.
func parseSizeCalc(opts map[string]string) (sizeCalc, error) {
	v, ok := opts["force_size_calc"]
	switch {
	case !ok:
		return sizeByCreator, nil
	case v == "chs":
		return sizeByCHS, nil
	case v == "current_size":
		return sizeByCurrentSize, nil
	}
	return 0, image.Errorf(syscall.EINVAL, "Invalid size calculation mode: '%s'", v)
}

// openDynamic reads the dynamic disk header and the BAT, checking every
// size against QEMU's limits and the file before it allocates.
func (img *Image) openDynamic(fileSize int64) error {
	dataOffset := binary.BigEndian.Uint64(img.footer.raw[16:])
	h := make([]byte, dynHeaderSize)
	if dataOffset > maxRequestEnd-dynHeaderSize {
		return image.Errorf(image.ErrCorrupt, "Error reading dynamic VHD header")
	}
	if dataOffset > uint64(fileSize) {
		// past the end, QEMU reads zeroes
	} else if err := img.file.ReadPadded(h, int64(dataOffset)); err != nil {
		return err
	}
	if string(h[:8]) != string(dynMagic) {
		return image.Errorf(image.ErrCorrupt, "Invalid header magic")
	}
	blockSize := binary.BigEndian.Uint32(h[offBlockSize:])
	if blockSize < 512 || blockSize&(blockSize-1) != 0 {
		return image.Errorf(image.ErrCorrupt, "Invalid block size %d", blockSize)
	}
	img.blockSize = int64(blockSize)
	img.bitmapSize = (img.blockSize/(8*512) + 511) &^ 511
	entries := int64(binary.BigEndian.Uint32(h[offMaxEntries:]))
	if img.size/img.blockSize > 0xffffffff {
		return image.Errorf(image.ErrCorrupt, "Too many blocks")
	}
	if entries > 0x7fffffff/4 {
		return image.Errorf(image.ErrCorrupt, "Max Table Entries too large (%d)", int32(entries))
	}
	if entries*img.blockSize < img.size {
		return image.Errorf(image.ErrCorrupt, "Page table too small")
	}
	tableOffset := binary.BigEndian.Uint64(h[offTableOffset:])
	if tableOffset > maxRequestEnd-uint64(entries)*4 || entries*4 > maxRequestBytes {
		return image.Errorf(image.ErrCorrupt, "Error reading pagetable")
	}
	tableEnd := (tableOffset + uint64(entries)*4 + 511) &^ 511
	if tableOffset > uint64(fileSize) || tableEnd > uint64(fileSize) {
		return errTruncated
	}
	img.batOffset = int64(tableOffset)
	raw := make([]byte, entries*4)
	if _, err := img.file.ReadAt(raw, img.batOffset); err != nil {
		return err
	}
	img.bat = make([]uint32, entries)
	img.freeOffset = int64(tableEnd)
	for i := range img.bat {
		e := binary.BigEndian.Uint32(raw[4*i:])
		img.bat[i] = e
		if e != unallocated {
			img.freeOffset = max(img.freeOffset, 512*int64(e)+img.bitmapSize+img.blockSize)
		}
	}
	if img.freeOffset > fileSize {
		return errTruncated
	}
	return nil
}

// maxRequestEnd is where QEMU's block layer stops accepting requests
// (BDRV_MAX_LENGTH): reads of headers beyond it fail instead of reading
// zeroes past the end of the file.
const maxRequestEnd = math.MaxInt64 &^ (1<<30 - 1)

// maxRequestBytes is the longest read QEMU's block layer accepts
// (BDRV_REQUEST_MAX_BYTES).
const maxRequestBytes = math.MaxInt32 &^ 511

var errTruncated = image.Errorf(image.ErrCorrupt, "block-vpc: free_data_block_offset points after the end of file. The image has been truncated.")

func (img *Image) Size() int64 { return img.size }

func (img *Image) Close() error { return nil }

// blockOffset is where guest offset off lies in the file, -1 when its
// block is not allocated; n is how many bytes from off stay in the block.
func (img *Image) blockOffset(off int64) (host, n int64) {
	index := off / img.blockSize
	in := off % img.blockSize
	n = img.blockSize - in
	if index >= int64(len(img.bat)) || img.bat[index] == unallocated {
		return -1, n
	}
	return 512*int64(img.bat[index]) + img.bitmapSize + in, n
}

func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	if img.fixed {
		return len(p), img.file.ReadPadded(p, off)
	}
	done := 0
	for done < len(p) {
		img.mu.Lock()
		host, n := img.blockOffset(off)
		img.mu.Unlock()
		n = min(n, int64(len(p)-done))
		chunk := p[done : done+int(n)]
		if host < 0 {
			clear(chunk)
		} else if err := img.file.ReadPadded(chunk, host); err != nil {
			return done, err
		}
		done += int(n)
		off += n
	}
	return done, nil
}

// BlockStatus: a fixed image is data throughout, zero where the file has
// holes; a dynamic image's allocated block is data to its end, and runs of
// unallocated blocks read as zeroes.
func (img *Image) BlockStatus(off, length int64) (image.Extent, error) {
	if img.fixed {
		return img.fixedStatus(off, length)
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	host, n := img.blockOffset(off)
	if host >= 0 {
		return image.Extent{Offset: off, Length: min(n, length), Allocated: true, Data: true, HostOffset: host}, nil
	}
	run := min(n, length)
	for run < length {
		h, n := img.blockOffset(off + run)
		if h >= 0 {
			break
		}
		run = min(run+n, length)
	}
	return image.Extent{Offset: off, Length: run, Allocated: true, Zero: true, HostOffset: -1}, nil
}

func (img *Image) fixedStatus(off, length int64) (image.Extent, error) {
	e := image.Extent{Offset: off, Length: length, Allocated: true, Data: true, Zero: true, HostOffset: off}
	if fileSize := img.file.Size(); off < fileSize {
		fe, err := img.file.BlockStatus(off, min(length, fileSize-off))
		if err != nil {
			return image.Extent{}, err
		}
		e.Length, e.Zero = fe.Length, fe.Zero
	}
	return e, nil
}

// HoleBlocks: a dynamic image's new block lies past the end of its data
// (its bitmap over the old footer), so what a write leaves of it is a hole
// that reads as zeroes, as with QEMU.
func (img *Image) HoleBlocks() {}

// Info: dynamic images report their block size as the cluster size.
func (img *Image) Info(info *image.Info) error {
	if img.footer.diskType != diskFixed {
		info.ClusterSize = img.blockSize
	}
	return nil
}
