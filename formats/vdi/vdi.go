// Package vdi is the VirtualBox disk image driver (VDI 1.1, static and
// dynamic), as qemu's block/vdi.c reads, writes, creates and checks it.
package vdi

import (
	"sync"

	"qimg/image"
)

func init() {
	image.Register(&image.Format{
		Name:          "vdi",
		Probe:         probe,
		Open:          Open,
		CreateOptions: createOptions,
		Create:        Create,
		CheckCreate:   checkCreate,
		InOrder:       inOrder,
	})
}

// probe is qemu's vdi_probe: the header carries the signature. qemu
// probes a zero-padded buffer of 2 KiB, so a file shorter than the header
// probes as VDI too (and then fails to open).
func probe(h []byte, _ string) int {
	if len(h) >= 0x44 && le.Uint32(h[0x40:]) == signature {
		return 100
	}
	return 0
}

// Image is an open VDI image.
type Image struct {
	file     *image.Node
	filename string
	mu       sync.RWMutex // guards h.blocksAllocated and bmap
	h        *header
	bmap     []uint32
	// inUse is one past the highest data block the map points at: a new
	// block must not go below it or it would overwrite another's data.
	inUse uint32
}

// Open reads and validates the header and the block map.
func Open(o *image.OpenContext) (image.Driver, error) {
	b := make([]byte, headerSize)
	if err := o.File.ReadPadded(b, 0); err != nil {
		return nil, err
	}
	h, err := parseHeader(b, o.File.Size())
	if err != nil {
		return nil, err
	}
	bmap, err := readBmap(o.File, h)
	if err != nil {
		return nil, err
	}
	var inUse uint32
	for _, entry := range bmap {
		if allocated(entry) {
			inUse = max(inUse, entry+1)
		}
	}
	return &Image{file: o.File, filename: o.Filename, h: h, bmap: bmap, inUse: inUse}, nil
}

// bmapChunk bounds the buffer the block map is read through, so that
// memory is the map itself and not twice its size.
const bmapChunk = 1 << 20

// readBmap reads the block map (parseHeader has checked that it lies
// inside the file).
func readBmap(f *image.Node, h *header) ([]uint32, error) {
	bmap := make([]uint32, h.blocksInImage)
	buf := make([]byte, min(bmapChunk, 4*len(bmap)))
	for i := 0; i < len(bmap); {
		n := min(len(bmap)-i, len(buf)/4)
		if err := f.ReadPadded(buf[:4*n], int64(h.offsetBmap)+4*int64(i)); err != nil {
			return nil, err
		}
		for k := 0; k < n; k++ {
			bmap[i+k] = le.Uint32(buf[4*k:])
		}
		i += n
	}
	return bmap, nil
}

func (v *Image) Size() int64 { return int64(v.h.diskSize) }

func (v *Image) Close() error { return nil }

// hostOffset is where guest offset off lives in the file, or -1 when its
// block is not allocated (it reads as zeroes).
func (v *Image) hostOffset(off int64) int64 {
	entry := v.bmap[off/blockSize]
	if !allocated(entry) {
		return -1
	}
	return int64(v.h.offsetData) + int64(entry)*blockSize + off%blockSize
}

// ReadAt reads block by block; a block's data past the end of the file
// reads as zeroes, as it does in qemu.
func (v *Image) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n := int(min(int64(len(p)-done), blockSize-off%blockSize))
		v.mu.RLock()
		host := v.hostOffset(off)
		v.mu.RUnlock()
		if host < 0 {
			clear(p[done : done+n])
		} else if err := v.file.ReadPadded(p[done:done+n], host); err != nil {
			return done, err
		}
		done += n
		off += int64(n)
	}
	return done, nil
}

// statusRun bounds one block status answer, so that the block map lock
// is held briefly however large the request.
const statusRun = 1 << 30

// BlockStatus reports a run of blocks that read alike: unallocated blocks
// are zeroes the image itself decides; allocated ones are data at their
// place in the file, merged while that place continues. For static images
// qemu asks the file too, so that holes there read as zero runs.
func (v *Image) BlockStatus(off, length int64) (image.Extent, error) {
	length = min(length, statusRun)
	n := min(length, blockSize-off%blockSize)
	v.mu.RLock()
	host := v.hostOffset(off)
	for n < length {
		next := v.hostOffset(off + n)
		if host < 0 && next >= 0 || host >= 0 && next != host+n {
			break
		}
		n += min(length-n, blockSize)
	}
	v.mu.RUnlock()
	e := image.Extent{Offset: off, Length: n, Allocated: true, HostOffset: -1}
	if host < 0 {
		e.Zero = true
		return e, nil
	}
	e.Data, e.HostOffset = true, host
	if v.h.imageType != typeStatic {
		return e, nil
	}
	size := v.file.Size()
	if host >= size {
		e.Zero = true
		return e, nil
	}
	fe, err := v.file.BlockStatus(host, min(n, size-host))
	if err != nil {
		return e, nil // no answer from the file: data, as qemu keeps it
	}
	e.Zero = fe.Zero
	if !(fe.Zero && fe.End() >= size) {
		// a hole that reaches the end of the file covers the whole block
		e.Length = fe.Length
	}
	return e, nil
}

// Info: VDI reports its block size as the cluster size and nothing
// format-specific.
func (v *Image) Info(info *image.Info) error {
	info.ClusterSize = blockSize
	return nil
}

// Truncate: qemu's vdi driver cannot resize; say so in its words.
func (v *Image) Truncate(int64, image.Prealloc) error {
	return image.Errorf(image.ErrUnsupported, "Image format driver does not support resize")
}
