package qcow

import (
	"bytes"
	"encoding/binary"
	"io"

	"github.com/klauspost/compress/flate"

	"qimg/image"
)

// Compressed clusters hold raw deflate data with a 4 KiB window (qemu's
// windowBits -12: a larger window would not inflate in qemu), packed at
// the end of the file one after another, each from a sector boundary;
// the L2 entry carries the compressed size above the offset.

// CompressedClusterSize is the unit of compressed writes: one cluster.
func (q *Image) CompressedClusterSize() int64 { return q.cs }

// CompressCluster compresses one cluster of guest data, the image's last
// one padded with zeroes as qemu pads it. It returns nil when the result
// is not smaller than a cluster: the cluster is then written as data.
func (q *Image) CompressCluster(dst, src []byte) ([]byte, error) {
	if q.h.cryptMethod != 0 {
		return nil, image.Errorf(image.ErrUnsupported, "Compression is not supported with encryption")
	}
	if int64(len(src)) > q.cs {
		return nil, image.Errorf(image.ErrUnsupported, "compressed writes are one cluster (%d bytes) at most", q.cs)
	}
	if int64(len(src)) < q.cs {
		full := make([]byte, q.cs)
		copy(full, src)
		src = full
	}
	buf := bytes.NewBuffer(dst[:0])
	w, err := flate.NewWriterWindow(buf, 4096)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(src); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if int64(buf.Len()) >= q.cs {
		return nil, nil
	}
	return buf.Bytes(), nil
}

// WriteCompressed stores compressed data as the cluster at guest offset
// off, at the end of the file from a sector boundary, as qemu's
// qcow_co_pwritev_compressed does. A cluster already allocated as data is written in place
// uncompressed instead (qemu would write the compressed bytes there
// without marking them so).
func (q *Image) WriteCompressed(off int64, compressed []byte) error {
	if int64(len(compressed)) >= q.cs {
		return image.Errorf(image.ErrUnsupported, "compressed data of %d bytes does not fit a %d-byte cluster", len(compressed), q.cs)
	}
	q.wmu.Lock()
	defer q.wmu.Unlock()
	e, err := q.entry(off)
	if err != nil {
		return err
	}
	if e != 0 && e&flagCompressed == 0 {
		data, err := inflateCluster(compressed, q.cs)
		if err != nil {
			return err
		}
		n := min(q.cs, q.Size()-off)
		q.file.Event(image.EvWriteAIO)
		return q.file.WriteGrowing(data[:n], clampOffset(e))
	}
	l2off, err := q.l2ForWrite(off)
	if err != nil {
		return err
	}
	// qemu places it at the file's length as its block layer knows it,
	// in whole sectors
	host := alignUp(q.fileEnd, 512)
	q.file.Event(image.EvWriteCompressed)
	if err := q.file.WriteGrowing(compressed, host); err != nil {
		return err
	}
	q.fileEnd = host + int64(len(compressed))
	entry := uint64(host) | flagCompressed | uint64(len(compressed))<<(63-uint(q.h.clusterBits))
	q.file.Event(image.EvL2UpdateCompressed)
	return q.setL2Entry(l2off, off, entry)
}

func inflateCluster(compressed []byte, cs int64) ([]byte, error) {
	out := make([]byte, cs)
	if _, err := io.ReadFull(flate.NewReader(bytes.NewReader(compressed)), out); err != nil {
		return nil, err
	}
	return out, nil
}

// setL2Entry stores the L2 entry of guest offset pos in the table at
// l2off, on disk and in the cache.
func (q *Image) setL2Entry(l2off uint64, pos int64, entry uint64) error {
	idx := (pos >> q.h.clusterBits) & (1<<q.h.l2Bits - 1)
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], entry)
	if err := q.file.WriteGrowing(e[:], int64(l2off)+idx*8); err != nil {
		return err
	}
	q.l2Cache.SetEntry(l2off, idx, entry)
	return nil
}
