package vmdk

import (
	"encoding/binary"
	"sync"

	"github.com/klauspost/compress/zlib"

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

// deflateLevel is zlib's default level, which qemu's compress() uses:
// klauspost's deflate at that level is several times faster than zlib's
// and its grains within 2% of qemu-img's size.
const deflateLevel = 6

// deflater is one compressing goroutine's zlib writer and the sink it
// writes to, kept between grains: setting a writer up allocates its
// window and tables, which would cost more than deflating a grain.
type deflater struct {
	zw  *zlib.Writer
	out appendWriter
}

// appendWriter appends what is written to b, so that grains are deflated
// straight into the caller's memory.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

var deflaters = sync.Pool{New: func() any {
	d := &deflater{}
	d.zw, _ = zlib.NewWriterLevel(&d.out, deflateLevel)
	return d
}}

// CompressCluster deflates one grain into a zlib stream, as qemu's
// compress() does. A stream-optimized grain is stored deflated even when
// that is no smaller, so the result is never nil there; other extents
// store grains as they are (nil).
func (img *Image) CompressCluster(dst, src []byte) ([]byte, error) {
	if !img.CompressedOnly() {
		// qemu writes "compressed" grains of a sparse extent as they are
		return nil, nil
	}
	return deflateGrain(dst, src)
}

// deflateGrain deflates one grain into a zlib stream in dst's memory.
func deflateGrain(dst, src []byte) ([]byte, error) {
	d := deflaters.Get().(*deflater)
	defer deflaters.Put(d)
	d.out.b = dst[:0]
	d.zw.Reset(&d.out)
	_, err := d.zw.Write(src)
	if err == nil {
		err = d.zw.Close()
	}
	out := d.out.b
	d.out.b = nil // the pool keeps no hold on the caller's memory
	if err != nil {
		return nil, err
	}
	return out, nil
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
	record := img.grainRecord(off, compressed)
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

// grainRecord lays out marker, data and padding of one grain in a buffer
// kept between grains (writes hold writeMu): one write per grain, and no
// garbage of a grain's size each time.
func (img *Image) grainRecord(off int64, compressed []byte) []byte {
	n := (12 + len(compressed) + sectorSize - 1) &^ (sectorSize - 1)
	if cap(img.record) < n {
		img.record = make([]byte, n)
	}
	record := img.record[:n]
	binary.LittleEndian.PutUint64(record, uint64(off/sectorSize))
	binary.LittleEndian.PutUint32(record[8:], uint32(len(compressed)))
	clear(record[12+copy(record[12:], compressed):])
	return record
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
