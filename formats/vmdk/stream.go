package vmdk

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"sync"

	"qimg/image"
)

// Writes into a streamOptimized extent, laid out as qemu-img lays it
// out: every grain deflated behind a grain marker (its sector and size),
// appended after the last one, and entered in the grain tables that
// creation placed before the grains. Compression is separate from
// placement (image.CompressedWriter), so that a copy deflates grains on
// every core and the driver only appends them.

// CompressedOnly says that guest data can only be written compressed,
// as qemu's needs_compressed_writes does for a streamOptimized image.
func (img *Image) CompressedOnly() bool {
	return len(img.extents) > 0 && img.extents[0].compressed
}

func (img *Image) CompressedClusterSize() int64 {
	if len(img.extents) == 0 || img.extents[0].flat {
		return 64 << 10
	}
	return img.extents[0].grainSize()
}

var zlibWriters = sync.Pool{New: func() any { return zlib.NewWriter(nil) }}

// CompressCluster deflates one grain into a zlib stream, as qemu's
// compress() does. A stream-optimized grain is stored deflated even when
// that is no smaller, so the result is never nil there; other extents
// store grains as they are (nil).
func (img *Image) CompressCluster(dst, src []byte) ([]byte, error) {
	if !img.CompressedOnly() {
		// qemu writes "compressed" grains of a sparse extent as they are
		return nil, nil
	}
	b := bytes.NewBuffer(dst[:0])
	w := zlibWriters.Get().(*zlib.Writer)
	defer zlibWriters.Put(w)
	w.Reset(b)
	if _, err := w.Write(src); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteCompressed appends one deflated grain at guest offset off.
func (img *Image) WriteCompressed(off int64, compressed []byte) error {
	img.writeMu.Lock()
	defer img.writeMu.Unlock()
	x, err := img.find(off)
	if err != nil {
		return err
	}
	if !x.compressed {
		return image.NotSupported("compressed writes into an uncompressed VMDK extent")
	}
	if err := img.flushPending(); err != nil {
		return err
	}
	if err := img.appendCompressed(x, off, compressed); err != nil {
		return err
	}
	return img.updateCID()
}

// appendCompressed writes marker and data after the last grain, padded to
// a sector, and points the grain tables at it; a grain written before is
// refused, as qemu refuses it.
func (img *Image) appendCompressed(x *extent, off int64, compressed []byte) error {
	rel := off - x.start
	g, err := x.lookup(rel)
	if err != nil {
		return err
	}
	if g.kind != grainUnallocated && g.kind != grainZero {
		return image.Errorf(image.ErrUnsupported, "Could not write to allocated cluster for streamOptimized")
	}
	if x.nextGrain == 0 {
		x.nextGrain = (x.file.Size() + x.grainSize() - 1) / x.grainSize() * x.grainSize()
	}
	host := x.nextGrain
	record := make([]byte, (12+len(compressed)+sectorSize-1)&^(sectorSize-1))
	binary.LittleEndian.PutUint64(record, uint64(off/sectorSize))
	binary.LittleEndian.PutUint32(record[8:], uint32(len(compressed)))
	copy(record[12:], compressed)
	if err := x.file.Truncate(host+int64(len(record)), image.PreallocOff); err != nil {
		return err
	}
	x.file.Event(image.EvWriteCompressed)
	if _, err := x.file.WriteAt(record, host); err != nil {
		return err
	}
	x.nextGrain = host + int64(len(record))
	return x.setEntry(rel-rel%x.grainSize(), uint32(host/sectorSize))
}

// pendingGrain collects the parts of one grain written uncompressed (a
// copy writes runs of data and skips zeroes) until the writes move on.
type pendingGrain struct {
	x    *extent
	off  int64 // guest offset of the grain
	data []byte
}

// writeStream writes p at guest offset off into the pending grain of a
// compressed extent, appending the previous grain when p starts another.
func (img *Image) writeStream(x *extent, p []byte, off int64) error {
	rel := off - x.start
	start := off - rel%x.grainSize()
	if pg := img.pending; pg == nil || pg.off != start || pg.x != x {
		if err := img.flushPending(); err != nil {
			return err
		}
		g, err := x.lookup(rel)
		if err != nil {
			return err
		}
		if g.kind != grainUnallocated && g.kind != grainZero {
			return image.Errorf(image.ErrUnsupported, "Could not write to allocated cluster for streamOptimized")
		}
		n := min(x.grainSize(), x.start+x.end()-start)
		img.pending = &pendingGrain{x: x, off: start, data: make([]byte, n)}
	}
	copy(img.pending.data[off-start:], p)
	return nil
}

// flushPending deflates and appends the pending grain.
func (img *Image) flushPending() error {
	pg := img.pending
	if pg == nil {
		return nil
	}
	img.pending = nil
	compressed, err := img.CompressCluster(nil, pg.data)
	if err != nil {
		return err
	}
	return img.appendCompressed(pg.x, pg.off, compressed)
}
