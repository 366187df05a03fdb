package qcow2

import (
	"sync"

	"qimg/formats/luks"
	"qimg/image"
)

func init() {
	image.Register(&image.Format{
		Name:          "qcow2",
		Probe:         func(head []byte, _ string) int { return image.ProbeQcowVersion(head, false) },
		Open:          Open,
		CreateOptions: createOptions,
		OpenOptions:   openOptions,
		NameOptions:   []string{"encrypt.key-secret"},
		Create:        Create,
		CheckCreate:   CheckCreate,
		Measure:       Measure,
		InOrder:       inOrder,
	})
}

// Image is an open qcow2 image.
type Image struct {
	filename string
	file     *image.Node // the image file
	data     *image.Node // the external data file, nil without one
	backing  *image.Node
	writable bool

	h           *header
	clusterSize int64
	clusterBits uint32
	l2Bits      uint32
	extendedL2  bool
	cls         classifier

	// meta guards the metadata: the header copy, the L1 table, the
	// content of cached tables and the refcounts. Lookups hold it for
	// reading, allocation and every metadata update for writing. Guest
	// data transfers run outside it, except for allocating writes.
	meta sync.RWMutex
	size int64
	l1   []uint64

	l2cache *lru[*l2Table]
	rc      *refcounts // nil when opened read-only

	// corrupt is set when a metadata inconsistency was found while
	// writing: the header's corrupt bit is set and writes stop.
	corrupt bool
	// metaClusters names the host clusters holding L2 tables, refcount
	// blocks and snapshot L1 tables, for the overlap check of writable
	// images; a cluster leaves it when its refcount drops to zero.
	metaClusters map[int64]string
	// Metadata waiting to be written (writeback.go): L2 tables with
	// changed entries (kept out of the cache's eviction), L1 entries, and
	// host ranges to release once the tables no longer point at them.
	dirtyL2     map[int64]*l2Table
	dirtyL1     map[int64]struct{}
	pendingFree [][2]int64
	inflight    map[int64]chan struct{}
	// inflated caches decompressed clusters by their L2 entry.
	inflatedOnce sync.Once
	inflated     *lru[[]byte]
	// prealloc caches metadataPreallocated.
	preallocOnce sync.Once
	prealloc     bool
	// freeByte is where the next compressed cluster may start, 0 when a
	// new host cluster is needed.
	freeByte int64
	// creating defers header updates to the single header write that
	// completes a new image.
	creating bool
	// encrypt describes an encrypted image (info's "encrypt"); crypt is
	// its unlocked cipher, nil when it was opened for info only;
	// guestIV: the IVs count guest sectors (aes), not host ones (luks).
	encrypt  any
	crypt    *luks.Cipher
	guestIV  bool
	cryptRMW sync.Mutex // partial-sector writes of encrypted data
}

// l2Table is one decoded L2 table; bitmaps holds the second words of
// extended entries. dirtyLo/dirtyHi are the entries changed in memory and
// not yet written (lo >= hi: none).
type l2Table struct {
	offset           int64
	entries          []uint64
	bitmaps          []uint64
	dirtyLo, dirtyHi int
}

// Open opens a qcow2 image over its protocol node.
func Open(o *image.OpenContext) (image.Driver, error) {
	file := o.File
	fileSize := file.Size()
	first := make([]byte, min(fileSize, int64(headerV3MinLength)))
	if _, err := file.ReadAt(first, 0); err != nil {
		return nil, image.IOError("Could not read qcow2 header", err)
	}
	if len(first) < headerV2Length || string(first[:4]) != magic {
		return nil, image.Errorf(image.ErrWrongFormat, "Image is not in qcow2 format")
	}
	bits := be.Uint32(first[offClusterBits:])
	if bits < minClusterBits || bits > maxClusterBits {
		return nil, image.Errorf(image.ErrCorrupt, "Unsupported cluster size: 2^%d", bits)
	}
	// the first cluster, and what a backing name starting in it may use
	head := make([]byte, min(fileSize, int64(1)<<bits+maxBackingNameSize))
	if _, err := file.ReadAt(head, 0); err != nil {
		return nil, image.IOError("Could not read qcow2 header", err)
	}
	h, err := parseHeader(head)
	if err != nil {
		return nil, err
	}
	if o.Check {
		return openForCheck(o, h) // check_open.go
	}
	if o.Writable && file.WriteOnce() {
		return openInOrder(file, h) // stream.go: a new image onto S3
	}
	q := &Image{filename: o.Filename, file: file, writable: o.Writable}
	if err := q.openEncryption(o, h); err != nil { // encrypt.go
		return nil, err
	}
	if err := q.init(h); err != nil {
		return nil, err
	}
	// as qemu, every command refuses an image whose snapshot table it
	// cannot read
	if _, err := q.readSnapshots(); err != nil {
		return nil, err
	}
	if err := q.loadBitmaps(); err != nil {
		return nil, err
	}
	if o.Untrusted {
		// before anything reads guest data or block status
		if err := q.verifyReferences(); err != nil { // untrusted.go
			return nil, err
		}
	}
	if o.Writable {
		if err := q.openWritable(); err != nil {
			return nil, err
		}
	}
	return q, nil
}

// init checks what the header asks for against what qimg supports and
// loads the L1 table.
func (q *Image) init(h *header) error {
	switch h.cryptMethod {
	case cryptNone, cryptAES:
	case cryptLUKS:
		if q.encrypt == nil {
			return image.Errorf(image.ErrUnsupported, "qcow2 encryption (encrypt.format=luks) is not supported yet")
		}
	default:
		return image.Errorf(image.ErrCorrupt, "Unsupported encryption method %d", h.cryptMethod)
	}
	if h.incompatible&incompatCorrupt != 0 && q.writable {
		return image.Errorf(image.ErrCorrupt, "qcow2: Image is corrupt; cannot be opened read/write")
	}
	if h.autoclear&autoclearDataFileRaw != 0 && h.incompatible&incompatDataFile == 0 {
		return image.Errorf(image.ErrCorrupt, "data-file-raw requires a data file")
	}
	if h.autoclear&autoclearDataFileRaw != 0 && h.backingFile != "" {
		return image.Errorf(image.ErrCorrupt, "data-file-raw cannot be used with a backing file")
	}
	if h.incompatible&incompatDataFile != 0 && h.dataFile == "" {
		return image.Errorf(image.ErrUnsupported, "'data-file' is required for this image")
	}
	q.h = h
	q.size = int64(h.size)
	q.clusterBits = h.clusterBits
	q.clusterSize = h.clusterSize()
	q.l2Bits = h.l2Bits()
	q.extendedL2 = h.extendedL2()
	q.cls = classifier{version: h.version, clusterBits: h.clusterBits, extendedL2: q.extendedL2,
		dataFile: h.incompatible&incompatDataFile != 0}
	// entries beyond the end of the file read as zeroes (unallocated), as
	// qemu reads them: they are left out
	l1Off := int64(h.l1TableOffset)
	l1, err := q.readTable(l1Off, int(min(int64(h.l1Size), max(0, q.file.Size()-l1Off)/8)))
	if err != nil {
		return image.IOError("Could not read L1 table", err)
	}
	q.l1 = l1
	q.l2cache = newLRU[*l2Table](l2CacheTables(q.size, q.clusterBits, q.l2Bits))
	return nil
}

// readTable reads n big-endian words at off in bounded chunks; the caller
// has checked n against its limit. Words beyond the end of the file read
// as zeroes.
func (q *Image) readTable(off int64, n int) ([]uint64, error) {
	out := make([]uint64, n)
	const chunk = 1 << 20
	buf := make([]byte, min(int64(n)*8, chunk))
	for i := 0; i < n; {
		k := min(n-i, len(buf)/8)
		if err := q.file.ReadPadded(buf[:k*8], off+int64(i)*8); err != nil {
			return nil, err
		}
		for j := 0; j < k; j++ {
			out[i+j] = be.Uint64(buf[j*8:])
		}
		i += k
	}
	return out, nil
}

// l2Table returns the L2 table at host offset off, from the cache or the
// file.
func (q *Image) l2Table(off int64) (*l2Table, error) {
	if t, ok := q.dirtyL2[off]; ok {
		return t, nil
	}
	return q.l2cache.get(off, func() (*l2Table, error) {
		if off&(q.clusterSize-1) != 0 {
			return nil, image.Corrupt("%s: L2 table offset %#x unaligned", q.filename, off)
		}
		if off < q.clusterSize {
			return nil, image.Corrupt("%s: L2 table at %#x overlaps the image header", q.filename, off)
		}
		// a table beyond the end of the file reads as zeroes, as qemu
		// reads it
		buf := make([]byte, q.clusterSize)
		q.event(image.EvL2Load)
		if err := q.file.ReadPadded(buf, off); err != nil {
			return nil, err
		}
		return decodeL2(off, buf, q.extendedL2), nil
	})
}

func decodeL2(off int64, buf []byte, extended bool) *l2Table {
	t := &l2Table{offset: off}
	if extended {
		n := len(buf) / 16
		t.entries = make([]uint64, n)
		t.bitmaps = make([]uint64, n)
		for i := range n {
			t.entries[i] = be.Uint64(buf[i*16:])
			t.bitmaps[i] = be.Uint64(buf[i*16+8:])
		}
		return t
	}
	n := len(buf) / 8
	t.entries = make([]uint64, n)
	for i := range n {
		t.entries[i] = be.Uint64(buf[i*8:])
	}
	return t
}

// Size is the virtual size.
func (q *Image) Size() int64 {
	q.meta.RLock()
	defer q.meta.RUnlock()
	return q.size
}

// BackingFile is the stored backing file name and format.
func (q *Image) BackingFile() (string, string) { return q.h.backingFile, q.h.backingFormat }

// SetBacking attaches the backing node.
func (q *Image) SetBacking(n *image.Node) { q.backing = n }

// DataFile names the external data file, "" without one.
func (q *Image) DataFile() string {
	if q.h.incompatible&incompatDataFile == 0 {
		return ""
	}
	return q.h.dataFile
}

// SetDataFile attaches the external data file node.
func (q *Image) SetDataFile(n *image.Node) { q.data = n }

// dataNode is where guest clusters live.
func (q *Image) dataNode() *image.Node {
	if q.data != nil {
		return q.data
	}
	return q.file
}

// Close flushes what a writable image has pending, stores the bitmaps its
// writes dirtied (clearing their in-use flags) and marks it clean.
func (q *Image) Close() error {
	if !q.writable {
		return nil
	}
	return q.flushAndFinishBitmaps()
}

// flushAndFinishBitmaps flushes the image, then stores the tracked
// bitmaps, whose new directory must not reach the file before the data
// and tables it covers.
func (q *Image) flushAndFinishBitmaps() error {
	if err := q.Flush(); err != nil {
		return err
	}
	if err := q.finishBitmapTracking(); err != nil {
		return err
	}
	return q.Flush()
}
