package qcow2

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"

	"qimg/image"
)

// Compressed clusters hold raw deflate data (zlib without its header, a
// 4 KiB window: qemu's windowBits -12) or zstd frames. Decompression stops
// once a whole cluster is produced: the sectors may carry another
// cluster's bytes after the data.

// zstdMaxWindow bounds the memory a hostile zstd frame can make the
// decoder allocate; clusters are at most 2 MiB, so are qemu's windows.
const zstdMaxWindow = 8 << 20

var flatePool sync.Pool // io.ReadCloser implementing flate.Resetter

var zstdPool = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderMaxMemory(64<<20))
	if err != nil {
		return err
	}
	return d
}}

// decompress fills out (one cluster) from the compressed bytes in.
func decompress(ctype uint8, in, out []byte) error {
	switch ctype {
	case compressionZlib:
		var r io.ReadCloser
		if v := flatePool.Get(); v != nil {
			r = v.(io.ReadCloser)
			if err := r.(flate.Resetter).Reset(bytes.NewReader(in), nil); err != nil {
				return err
			}
		} else {
			r = flate.NewReader(bytes.NewReader(in))
		}
		_, err := io.ReadFull(r, out)
		flatePool.Put(r)
		if err != nil {
			return image.Corrupt("compressed cluster does not inflate to a cluster: %v", err)
		}
		return nil
	case compressionZstd:
		v := zstdPool.Get()
		d, ok := v.(*zstd.Decoder)
		if !ok {
			return v.(error)
		}
		defer zstdPool.Put(d)
		if err := d.Reset(bytes.NewReader(in)); err != nil {
			return image.Corrupt("compressed cluster: %v", err)
		}
		if _, err := io.ReadFull(d, out); err != nil {
			return image.Corrupt("compressed cluster does not decompress to a cluster: %v", err)
		}
		return nil
	}
	return image.NotSupported("compression type %d", ctype)
}

// Encoders are kept per caller, not shared: an encoder compresses one
// cluster at a time, and the copy engine compresses on every core.
var (
	flateWriters sync.Pool
	zstdWriters  = sync.Pool{New: func() any {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(1<<maxClusterBits), zstd.WithZeroFrames(true),
			zstd.WithEncoderCRC(false)) // qemu writes no checksum either
		if err != nil {
			return err
		}
		return enc
	}}
)

// errIncompressible: the compressed form is not smaller than a cluster;
// the caller writes the cluster uncompressed, as qemu does.
var errIncompressible = errors.New("cluster does not compress")

// compress compresses one cluster into dst's memory (reallocated when it
// is too small); the result is shorter than the input or
// errIncompressible.
func compress(ctype uint8, dst, in []byte) ([]byte, error) {
	var out []byte
	switch ctype {
	case compressionZlib:
		buf := bytes.NewBuffer(dst[:0])
		var w *flate.Writer
		if v := flateWriters.Get(); v != nil {
			w = v.(*flate.Writer)
			w.Reset(buf)
		} else {
			var err error
			if w, err = flate.NewWriterWindow(buf, 4096); err != nil {
				return nil, err
			}
		}
		if _, err := w.Write(in); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		flateWriters.Put(w)
		out = buf.Bytes()
	case compressionZstd:
		v := zstdWriters.Get()
		enc, ok := v.(*zstd.Encoder)
		if !ok {
			return nil, v.(error)
		}
		out = enc.EncodeAll(in, dst[:0])
		zstdWriters.Put(enc)
	default:
		return nil, image.NotSupported("compression type %d", ctype)
	}
	if len(out) >= len(in) {
		return nil, errIncompressible
	}
	return out, nil
}

// CompressedClusterSize is the unit of compressed writes: one cluster.
func (q *Image) CompressedClusterSize() int64 { return q.clusterSize }

// CompressCluster compresses one cluster of guest data (the last cluster
// of the image may be shorter; it is padded with zeroes) with the image's
// compression type. It returns nil when compression does not save space.
func (q *Image) CompressCluster(dst, src []byte) ([]byte, error) {
	return compressCluster(q.h.compressionType, q.clusterSize, dst, src)
}

// compressCluster compresses one cluster of cs bytes, padding a short
// last one; nil when compression saves nothing.
func compressCluster(ctype uint8, cs int64, dst, src []byte) ([]byte, error) {
	if int64(len(src)) > cs {
		return nil, image.Errorf(image.ErrUnsupported, "compressed writes are one cluster (%d bytes) at most", cs)
	}
	if int64(len(src)) < cs {
		full := make([]byte, cs)
		copy(full, src)
		src = full
	}
	out, err := compress(ctype, dst, src)
	if err == errIncompressible {
		return nil, nil
	}
	return out, err
}

// compressedEntry is the L2 descriptor of n compressed bytes at host:
// the offset, then the number of further 512-byte sectors they reach.
func compressedEntry(host, n int64, clusterBits uint32) uint64 {
	nsect := (host+n-1)/compressedSectorSize - host/compressedSectorSize
	shift := 62 - (clusterBits - 8)
	return uint64(host) | uint64(nsect)<<shift | oflagCompressed
}

// WriteCompressed stores compressed data as the cluster at guest offset
// off. Compressed clusters are packed one after another in the file, a
// host cluster shared by several holding one reference for each (qemu's
// qcow2_alloc_bytes).
func (q *Image) WriteCompressed(off int64, compressed []byte) error {
	cs := q.clusterSize
	if off&(cs-1) != 0 {
		return image.Errorf(image.ErrUnsupported, "compressed writes must be cluster aligned")
	}
	if int64(len(compressed)) >= cs || len(compressed) == 0 {
		return image.Errorf(image.ErrUnsupported, "compressed cluster of %d bytes for %d-byte clusters", len(compressed), cs)
	}
	if q.data != nil {
		return image.Errorf(image.ErrUnsupported, "Compression not supported with an external data file")
	}
	if q.encrypt != nil {
		return image.Errorf(image.ErrUnsupported, "Compression not supported with encryption")
	}
	q.markBitmapsDirty(off, cs)
	q.meta.Lock()
	defer q.meta.Unlock()
	if err := q.checkWritable(); err != nil {
		return err
	}
	l2Span := cs << q.l2Bits
	q.waitInflight(off>>q.clusterBits, off>>q.clusterBits+1)
	t, err := q.l2ForWrite(off / l2Span)
	if err != nil {
		return err
	}
	q.event(image.EvL2UpdateCompressed)
	host, err := q.allocBytes(int64(len(compressed)))
	if err != nil {
		return err
	}
	q.event(image.EvWriteCompressed)
	if err := q.writeData(compressed, host, off, true); err != nil {
		return err
	}
	idx := int((off >> q.clusterBits) & (1<<q.l2Bits - 1))
	old := l2Entry(t.entries[idx])
	t.entries[idx] = compressedEntry(host, int64(len(compressed)), q.clusterBits)
	// the same descriptor may have described freed data before
	q.inflatedCache().drop(int64(t.entries[idx]))
	if q.extendedL2 {
		t.bitmaps[idx] = 0
	}
	if err := q.writeL2(t, idx, idx+1); err != nil {
		return err
	}
	return q.releaseEntry(old)
}

// allocBytes allocates size bytes (less than a cluster) for compressed
// data right after the previous compressed cluster when they fit, taking
// a reference on every cluster they touch. The caller holds the metadata
// lock.
func (q *Image) allocBytes(size int64) (int64, error) {
	q.event(image.EvClusterAllocBytes)
	cs := q.clusterSize
	r := q.rc
	off := q.freeByte
	if off != 0 {
		v, err := r.get(off >> q.clusterBits)
		if err != nil {
			return 0, err
		}
		if v == r.max {
			off = 0
		}
	}
	free := cs - off&(cs-1)
	for {
		if off == 0 || free < size {
			ci, err := r.allocNoRef(1)
			if err != nil {
				return 0, err
			}
			nc := ci << q.clusterBits
			if off == 0 || (off+cs-1)&^(cs-1) != nc {
				off, free = nc, cs
			} else {
				free += cs
			}
		}
		first := off >> q.clusterBits
		last := (off + size - 1) >> q.clusterBits
		// only the entry written back points at these bytes: the
		// refcounts go with it (allocDeferred)
		r.deferring = true
		err := r.update(first, last-first+1, 1)
		r.deferring = false
		if err == errAgain {
			off = 0
			continue
		}
		if err != nil {
			return 0, err
		}
		break
	}
	q.freeByte = off + size
	if q.freeByte&(cs-1) == 0 {
		q.freeByte = 0
	}
	return off, nil
}
