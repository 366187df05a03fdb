package qcow2

import (
	"slices"
	"sync"

	"qimg/image"
)

// A new image written onto a write-once node (an S3 upload), whose bytes
// must come in file order. Guest data comes in guest order (the copy
// engine writes in order onto such a node): each cluster written takes
// the next host cluster, each compressed cluster the next bytes, so that
// data goes out as it comes. What describes the data is known only at the
// end (with -c, compressed sizes are known only as they are produced), so
// the tables follow the data (stream_layout.go) and the header, in the
// first cluster, is written last: the upload keeps its first part in
// memory and sends it last. Memory: the L2 tables of what was written and
// a refcount per host cluster; the upload bounds the rest.

// streamImage is a qcow2 image being written in file order. It is the
// driver of the convert target; it reads back only what is still in
// memory.
type streamImage struct {
	file        *image.Node
	h           *header
	size        int64
	cs          int64
	clusterBits uint32
	l2Bits      uint32
	words       int64      // 64-bit words per L2 entry: 2 with extended L2
	rc          *refcounts // the refcount width and encoding only

	mu     sync.Mutex
	next   int64              // the first host byte not yet allocated
	tables map[int64][]uint64 // L2 tables by L1 index, words as on disk
	refs   []uint16           // refcount of each host cluster allocated
	done   bool
	// backing is the image's backing node: clusters written in part
	// take the rest from it (stream_data.go)
	backing *image.Node
	// bitmaps are the persistent bitmaps stored (stream_bitmap.go)
	bitmaps []image.BitmapInfo
}

// maxShared bounds the compressed clusters that share one host cluster:
// the refcount width's maximum, and refs' own.
func (s *streamImage) maxShared() uint64 { return min(s.rc.max, 1<<16-1) }

// inOrder checks that an image with the create options o can be written
// in file order: what needs space planned before the data or data kept
// elsewhere (encryption, an external data file, preallocation) cannot.
func inOrder(o image.Options) error {
	p, err := parseCreateOptions(o)
	if err != nil {
		return err
	}
	var what string
	switch {
	case p.encryptFormat != "":
		what = "encryption"
	case p.dataFile != "":
		what = "an external data file"
	case p.prealloc != image.PreallocOff:
		what = "preallocation=" + string(p.prealloc)
	default:
		return nil
	}
	return image.Errorf(image.ErrUnsupported, "qcow2 images with %s cannot be written to S3 yet, where objects are written once, in order", what)
}

// createInOrder makes an empty image on a write-once node. A convert
// opens it next and starts again from the header (openInOrder); create
// alone leaves it as it is, complete.
func createInOrder(c *image.CreateContext, p *createParams, size int64) error {
	if err := inOrder(c.Options); err != nil {
		return err
	}
	h := newHeader(p)
	h.size = uint64(size)
	s, err := openInOrder(c.File, h)
	if err != nil {
		return err
	}
	return s.finish()
}

// openInOrder starts writing an image with header h onto a write-once
// node from its first data cluster: what followed the header (the tables
// of the empty image create made, in the upload's first parts) is
// dropped, and the node is sized for the largest layout the image can
// take.
func openInOrder(file *image.Node, h *header) (*streamImage, error) {
	if h.cryptMethod != cryptNone || h.dataFile != "" || h.nbSnapshots != 0 {
		return nil, image.Errorf(image.ErrUnsupported, "this qcow2 image cannot be written to S3")
	}
	cs := h.clusterSize()
	s := &streamImage{file: file, h: h, size: int64(h.size), cs: cs, clusterBits: h.clusterBits, l2Bits: h.l2Bits(),
		words: h.l2EntrySize() / 8, next: cs, tables: map[int64][]uint64{}, refs: []uint16{1}}
	bits := uint(h.refcountBits())
	s.rc = &refcounts{bits: bits, max: refcountMax(bits)}
	// the refcount structures lie before the L1 table, which was all
	// zeroes and never written: zeroing only them sends nothing
	if end := min(file.Size(), int64(h.l1TableOffset)); end > cs {
		if err := file.WriteZeroes(cs, end-cs, false); err != nil {
			return nil, err
		}
	}
	bound, err := streamBound(s.size, h)
	if err != nil {
		return nil, err
	}
	if err := file.Truncate(bound, image.PreallocOff); err != nil {
		return nil, err
	}
	return s, nil
}

// Size is the virtual size.
func (s *streamImage) Size() int64 { return s.size }

// Close leaves the node's storage to its own close: an upload not
// completed is dropped.
func (s *streamImage) Close() error { return nil }

// entry returns the L2 table holding guest cluster ci and the index of
// its entry's first word, making the table when create is set (else nil).
func (s *streamImage) entry(ci int64, create bool) ([]uint64, int64) {
	l1 := ci >> s.l2Bits
	t := s.tables[l1]
	if t == nil && create {
		t = make([]uint64, s.cs/8)
		s.tables[l1] = t
	}
	return t, (ci & (1<<s.l2Bits - 1)) * s.words
}

// allocCluster takes the next whole host cluster.
func (s *streamImage) allocCluster() int64 {
	host := (s.next + s.cs - 1) &^ (s.cs - 1)
	s.next = host + s.cs
	s.refs = append(s.refs, 1)
	return host
}

// allocBytes takes n bytes (less than a cluster) right after the last
// ones, in a host cluster of their own when the last one is shared by
// as many compressed clusters as a refcount counts; every host cluster
// they touch gets a reference, as qemu's qcow2_alloc_bytes gives.
func (s *streamImage) allocBytes(n int64) int64 {
	host := s.next
	if host%s.cs != 0 && uint64(s.refs[host/s.cs]) >= s.maxShared() {
		host = (host + s.cs - 1) &^ (s.cs - 1)
	}
	for c := host / s.cs; c <= (host+n-1)/s.cs; c++ {
		if c < int64(len(s.refs)) {
			s.refs[c]++
		} else {
			s.refs = append(s.refs, 1)
		}
	}
	s.next = host + n
	return host
}

func (s *streamImage) checkOpen() error {
	if s.done {
		return image.ErrReadOnly
	}
	return nil
}

// CompressedClusterSize is one cluster.
func (s *streamImage) CompressedClusterSize() int64 { return s.cs }

// CompressCluster compresses with the image's compression type.
func (s *streamImage) CompressCluster(dst, src []byte) ([]byte, error) {
	return compressCluster(s.h.compressionType, s.cs, dst, src)
}

// WriteCompressed appends a compressed cluster after the last bytes.
func (s *streamImage) WriteCompressed(off int64, compressed []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	n := int64(len(compressed))
	if off&(s.cs-1) != 0 || n == 0 || n >= s.cs {
		return image.Errorf(image.ErrUnsupported, "compressed cluster of %d bytes at %d for %d-byte clusters", n, off, s.cs)
	}
	ci := off >> s.clusterBits
	t, i := s.entry(ci, true)
	if t[i] != 0 {
		return image.Errorf(image.ErrUnsupported, "guest cluster at %d was already written: "+
			"an image written to S3 takes each cluster once", off)
	}
	host := s.allocBytes(n)
	if _, err := s.file.WriteAt(compressed, host); err != nil {
		return err
	}
	t[i] = compressedEntry(host, n, s.clusterBits)
	return nil
}

// Info gives what the copy engine sizes its work by: the cluster size and
// whether the image has subclusters.
func (s *streamImage) Info(info *image.Info) error {
	info.ClusterSize = s.cs
	fi := &formatInfo{Compat: "1.1", RefcountBits: s.h.refcountBits(), CompressionType: "zlib",
		ExtendedL2: boolp(s.words == 2)}
	if s.h.version == 2 {
		fi.Compat, fi.ExtendedL2 = "0.10", nil
	}
	if s.h.compressionType == compressionZstd {
		fi.CompressionType = "zstd"
	}
	info.FormatSpecific = &image.FormatSpecific{Type: "qcow2", Data: fi}
	return nil
}

// Complete writes the tables and the header, then completes the node's
// storage: only now does the image appear.
func (s *streamImage) Complete() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		if err := s.finish(); err != nil {
			return err
		}
	}
	return s.file.Complete()
}

// finish writes the tables after the data, in file order, then the
// header, and sizes the node to the end of the last table.
func (s *streamImage) finish() error {
	s.done = true
	dataEnd := (s.next + s.cs - 1) &^ (s.cs - 1)
	l1 := l1Entries(s.size, s.clusterBits, s.l2Bits)
	t, err := planTail(dataEnd, int64(len(s.tables)), l1, s.cs, refsPerBlock(s.h))
	if err != nil {
		return err
	}
	l1Table, err := s.writeL2Tables(t.l2Offset, l1)
	if err != nil {
		return err
	}
	if err := s.writeRefcounts(t, dataEnd); err != nil {
		return err
	}
	if err := s.writeL1(l1Table, t.l1Offset); err != nil {
		return err
	}
	s.h.l1Size = uint32(l1)
	s.h.l1TableOffset = uint64(t.l1Offset)
	s.h.refcountTableOffset = uint64(t.reftableOffset)
	s.h.refcountTableClusters = uint32(t.reftableClusters)
	head, err := s.h.encode()
	if err != nil {
		return err
	}
	full := make([]byte, s.cs)
	copy(full, head)
	if _, err := s.file.WriteAt(full, 0); err != nil {
		return err
	}
	return s.file.Truncate(t.end, image.PreallocOff)
}

// writeL2Tables writes the L2 tables one after another from off, in the
// order of their L1 entries, and returns the L1 table pointing at them.
func (s *streamImage) writeL2Tables(off, l1Entries int64) ([]uint64, error) {
	l1 := make([]uint64, l1Entries)
	idx := make([]int64, 0, len(s.tables))
	for i := range s.tables {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	buf := make([]byte, s.cs)
	for _, i := range idx {
		for w, v := range s.tables[i] {
			be.PutUint64(buf[w*8:], v)
		}
		if _, err := s.file.WriteAt(buf, off); err != nil {
			return nil, err
		}
		l1[i] = uint64(off) | oflagCopied
		off += s.cs
	}
	return l1, nil
}

// writeRefcounts writes the refcount table and blocks: every cluster of
// the file is referenced once, but for those compressed clusters share.
func (s *streamImage) writeRefcounts(t streamTail, dataEnd int64) error {
	table := make([]byte, t.reftableClusters*s.cs)
	for b := int64(0); b < t.refblocks; b++ {
		be.PutUint64(table[b*8:], uint64(t.refblockOffset+b*s.cs))
	}
	if _, err := s.file.WriteAt(table, t.reftableOffset); err != nil {
		return err
	}
	per := refsPerBlock(s.h)
	clusters := t.end / s.cs
	dataClusters := dataEnd / s.cs
	block := make([]byte, s.cs)
	for b := int64(0); b < t.refblocks; b++ {
		clear(block)
		for i := int64(0); i < per && b*per+i < clusters; i++ {
			c := b*per + i
			v := uint64(1)
			if c < dataClusters && c < int64(len(s.refs)) {
				v = uint64(s.refs[c])
			}
			s.rc.set1(block, i, v)
		}
		if _, err := s.file.WriteAt(block, t.refblockOffset+b*s.cs); err != nil {
			return err
		}
	}
	return nil
}

// writeL1 writes the L1 table a cluster at a time, leaving out clusters
// of zeroes: the node reads zeroes where nothing was written.
func (s *streamImage) writeL1(l1 []uint64, off int64) error {
	per := s.cs / 8
	buf := make([]byte, s.cs)
	for from := int64(0); from < int64(len(l1)); from += per {
		part := l1[from:min(from+per, int64(len(l1)))]
		if !slices.ContainsFunc(part, func(v uint64) bool { return v != 0 }) {
			continue
		}
		clear(buf)
		for i, v := range part {
			be.PutUint64(buf[i*8:], v)
		}
		if _, err := s.file.WriteAt(buf[:len(part)*8], off+from*8); err != nil {
			return err
		}
	}
	return nil
}
