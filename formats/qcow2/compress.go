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

var (
	flateWriters sync.Pool
	zstdEncoder  struct {
		once sync.Once
		enc  *zstd.Encoder
		err  error
	}
)

// errIncompressible: the compressed form is not smaller than a cluster;
// the caller writes the cluster uncompressed, as qemu does.
var errIncompressible = errors.New("cluster does not compress")

// compress compresses one cluster; the result is shorter than the input
// or errIncompressible.
func compress(ctype uint8, in []byte) ([]byte, error) {
	var out []byte
	switch ctype {
	case compressionZlib:
		var buf bytes.Buffer
		buf.Grow(len(in))
		var w *flate.Writer
		if v := flateWriters.Get(); v != nil {
			w = v.(*flate.Writer)
			w.Reset(&buf)
		} else {
			var err error
			if w, err = flate.NewWriterWindow(&buf, 4096); err != nil {
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
		zstdEncoder.once.Do(func() {
			zstdEncoder.enc, zstdEncoder.err = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1),
				zstd.WithWindowSize(1<<maxClusterBits), zstd.WithZeroFrames(true))
		})
		if zstdEncoder.err != nil {
			return nil, zstdEncoder.err
		}
		out = zstdEncoder.enc.EncodeAll(in, make([]byte, 0, len(in)))
	default:
		return nil, image.NotSupported("compression type %d", ctype)
	}
	if len(out) >= len(in) {
		return nil, errIncompressible
	}
	return out, nil
}
