package image

// CompressedWriter is implemented by formats that store clusters
// compressed (qcow2: zlib or zstd per compression_type). Compression is
// split from placement so that callers compress many clusters in parallel
// and the driver only allocates and writes the result.
type CompressedWriter interface {
	// CompressedClusterSize is the size and alignment of one compressed
	// write: the cluster size.
	CompressedClusterSize() int64
	// CompressCluster compresses src (one cluster; the image's last
	// cluster may be shorter) with the image's algorithm, appending to
	// dst[:0]. It returns nil when the result would not be smaller than
	// the cluster, so that the caller writes the data uncompressed. It is
	// safe for concurrent use and does no I/O.
	CompressCluster(dst, src []byte) ([]byte, error)
	// WriteCompressed stores compressed (a result of CompressCluster) as
	// the cluster that starts at guest offset off.
	WriteCompressed(off int64, compressed []byte) error
}

// CompressedOnly is implemented by formats whose guest data can only be
// written compressed (a streamOptimized VMDK): copies into them compress
// without -c, as qemu-img does for its needs_compressed_writes.
type CompressedOnly interface {
	CompressedOnly() bool
}

// CompressedWriter returns the node's compressed-cluster capability; ok is
// false for formats without one.
func (n *Node) CompressedWriter() (w CompressedWriter, ok bool) {
	w, ok = n.drv.(CompressedWriter)
	return w, ok
}

// WriteCompressed stores one compressed cluster at guest offset off.
func (n *Node) WriteCompressed(off int64, compressed []byte) error {
	w, ok := n.drv.(CompressedWriter)
	if !ok {
		return Errorf(ErrUnsupported, "Compression not supported for this file format")
	}
	if err := n.checkWrite(off, 0); err != nil {
		return err
	}
	return w.WriteCompressed(off, compressed)
}
