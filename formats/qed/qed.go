// Package qed is the QED (QEMU Enhanced Disk) format driver: a header, one
// L1 table of L2 tables, and data clusters, with an optional backing file.
package qed

import (
	"encoding/binary"
	"io"
	"math"
	"sync"
	"syscall"

	"qimg/image"
)

func init() {
	image.Register(&image.Format{
		Name:          "qed",
		Probe:         probe,
		Open:          Open,
		CreateOptions: createOptions,
		CheckCreate:   checkCreate,
		Create:        Create,
	})
}

// probe is QEMU's bdrv_qed_probe: the magic decides.
func probe(h []byte, _ string) int {
	if len(h) >= headerSize && string(h[:4]) == magic {
		return 100
	}
	return 0
}

// Image is an open QED image.
type Image struct {
	file    *image.Node
	backing *image.Node
	h       header
	l       layout
	l1      []uint64 // the L1 entries that map the image, no more

	backingName, backingFormat string

	writable bool
	wmu      sync.Mutex // serialises writes

	mu      sync.Mutex        // guards l1 and l.fileSize
	l2Cache *image.TableCache // pieces of L2 tables by file offset
}

// l2Chunk is how many L2 entries are read and cached at once: tables may
// be as large as 1 GiB, so they are read piecewise.
const l2Chunk = 512

// Open reads and validates the header and the L1 table.
func Open(o *image.OpenContext) (image.Driver, error) {
	q := &Image{file: o.File, writable: o.Writable, l2Cache: image.NewTableCache(binary.LittleEndian, 256, image.EvL2Load)}
	head := make([]byte, headerSize)
	if err := o.File.ReadPadded(head, 0); err != nil {
		return nil, image.Errorf(err, "Failed to read QED header")
	}
	q.h = parseHeader(head)
	if err := q.h.validate(); err != nil {
		return nil, err
	}
	q.l = newLayout(&q.h, o.File.Size())
	if !q.l.tableOK(q.h.l1TableOffset) {
		return nil, image.Errorf(image.ErrCorrupt, "QED table offset is invalid")
	}
	if q.h.headerSize > math.MaxUint32/q.h.clusterSize {
		return nil, image.Errorf(image.ErrCorrupt, "QED header size is too large")
	}
	if err := q.readBackingName(); err != nil {
		return nil, err
	}
	if err := q.readL1(); err != nil {
		return nil, err
	}
	if o.Writable && !o.Check {
		if err := q.prepareWrites(); err != nil {
			return nil, err
		}
	}
	return q, nil
}

func (q *Image) readBackingName() error {
	if q.h.features&featureBackingFile == 0 {
		return nil
	}
	end := uint64(q.h.backingNameOff) + uint64(q.h.backingNameSize)
	if end > uint64(q.h.clusterSize)*uint64(q.h.headerSize) {
		return image.Errorf(image.ErrCorrupt, "QED backing filename offset is invalid")
	}
	if q.h.backingNameSize >= maxBackingName {
		return image.Errorf(syscall.EINVAL, "Failed to read backing filename")
	}
	name := make([]byte, q.h.backingNameSize)
	if err := q.file.ReadPadded(name, int64(q.h.backingNameOff)); err != nil {
		return image.Errorf(err, "Failed to read backing filename")
	}
	q.backingName = cString(name)
	if q.h.features&featureNoProbe != 0 {
		q.backingFormat = "raw"
	}
	return nil
}

// prepareWrites readies a writable open as qemu's: unknown autoclear
// bits are cleared, and an image left with the need-check flag (not
// closed cleanly) is checked and its invalid offsets cleared.
func (q *Image) prepareWrites() error {
	if q.h.autoclear != 0 {
		q.h.autoclear = 0
		if err := q.writeHeader(); err != nil {
			return image.Errorf(err, "Failed to update header")
		}
		if err := q.file.Flush(); err != nil {
			return err
		}
	}
	if q.h.features&featureNeedCheck != 0 {
		if _, err := q.Check(image.FixErrors|image.FixLeaks, io.Discard); err != nil {
			return image.Errorf(err, "Image corrupted: %v", err)
		}
	}
	return nil
}

// cString cuts at the first NUL, as C string handling does.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// readL1 reads only the L1 entries the image size needs: the table was
// checked to lie inside the file, and those entries are a part of it.
func (q *Image) readL1() error {
	perL2 := q.l.tableNelems << q.l.clusterBits
	n := (int64(q.h.imageSize) + perL2 - 1) / perL2
	buf := make([]byte, n*8)
	if err := q.file.ReadPadded(buf, int64(q.h.l1TableOffset)); err != nil {
		return image.Errorf(err, "Failed to read L1 table")
	}
	q.l1 = make([]uint64, n)
	for i := range q.l1 {
		q.l1[i] = binary.LittleEndian.Uint64(buf[i*8:])
	}
	return nil
}

func (q *Image) Size() int64 { return int64(q.h.imageSize) }

// BackingFile names the backing file; a raw one is never probed.
func (q *Image) BackingFile() (string, string) { return q.backingName, q.backingFormat }

func (q *Image) SetBacking(n *image.Node) { q.backing = n }

// Info fills what qemu's bdrv_qed_get_info reports: the cluster size,
// and a dirty flag that is false even when the need-check flag is set.
func (q *Image) Info(info *image.Info) error {
	info.ClusterSize = q.l.clusterSize
	dirty := false
	info.DirtyFlag = &dirty
	return nil
}

// run is a stretch of guest clusters with one kind of mapping.
type run struct {
	kind   runKind
	host   int64 // file offset of the run's first byte (runData)
	length int64
}

type runKind int

const (
	runUnallocated runKind = iota
	runZero
	runData
)

var errInvalid = image.Errorf(syscall.EINVAL, "Invalid argument")

// find is QEMU's qed_find_cluster: the mapping of the guest bytes at pos,
// at most length long and within one L2 table, with contiguous clusters
// of one kind merged.
func (q *Image) find(pos, length int64) (run, error) {
	coverage := q.l.tableNelems << q.l.clusterBits
	l1i := pos / coverage
	inTable := coverage - pos%coverage
	length = min(length, inTable)
	q.mu.Lock()
	l2off, lay := q.l1[l1i], q.l
	q.mu.Unlock()
	if l2off == 0 {
		return run{kind: runUnallocated, length: length}, nil
	}
	if !lay.tableOK(l2off) {
		return run{}, errInvalid
	}
	idx := (pos % coverage) >> q.l.clusterBits
	into := pos & (q.l.clusterSize - 1)
	first, err := q.l2Entry(l2off, idx)
	if err != nil {
		return run{}, err
	}
	want := (into + length + q.l.clusterSize - 1) >> q.l.clusterBits
	n := int64(1)
	for ; n < want; n++ {
		e, err := q.l2Entry(l2off, idx+n)
		if err != nil {
			return run{}, err
		}
		if !continues(first, e, n, q.l.clusterSize) {
			break
		}
	}
	r := run{length: min(n<<q.l.clusterBits-into, length)}
	switch {
	case first == 0:
		r.kind = runUnallocated
	case first == zeroCluster:
		r.kind = runZero
	case lay.clusterOK(first):
		r.kind = runData
		r.host = int64(first) + into
	default:
		return run{}, errInvalid
	}
	return r, nil
}

// continues tells whether the n-th entry after first extends its run:
// the same kind, and for data the next cluster in the file.
func continues(first, e uint64, n, clusterSize int64) bool {
	if first == 0 || first == zeroCluster {
		return e == first
	}
	return e == first+uint64(n*clusterSize)
}

// l2Entry reads entry idx of the L2 table at off through a small cache of
// table pieces.
func (q *Image) l2Entry(off uint64, idx int64) (uint64, error) {
	start := off + uint64(idx/l2Chunk*l2Chunk*8)
	chunk, err := q.l2Cache.Get(q.file, start, min(l2Chunk, q.l.tableNelems))
	if err != nil {
		return 0, err
	}
	return chunk[idx%l2Chunk], nil
}

// ReadAt reads guest data: clusters from the file, zero clusters as
// zeroes, unallocated ones from the backing file (zeroes without one).
func (q *Image) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		r, err := q.find(off+int64(done), int64(len(p)-done))
		if err != nil {
			return done, err
		}
		buf := p[done : done+int(r.length)]
		switch r.kind {
		case runData:
			q.file.Event(image.EvReadAIO)
			err = q.file.ReadPadded(buf, r.host)
		case runZero:
			clear(buf)
		default:
			if q.backing != nil {
				q.file.Event(image.EvReadBackingAIO)
				err = q.backing.ReadPadded(buf, off+int64(done))
			} else {
				clear(buf)
			}
		}
		if err != nil {
			return done, err
		}
		done += len(buf)
	}
	return done, nil
}

// BlockStatus answers as QEMU's bdrv_qed_co_block_status.
func (q *Image) BlockStatus(off, length int64) (image.Extent, error) {
	r, err := q.find(off, length)
	if err != nil {
		return image.Extent{}, err
	}
	e := image.Extent{Offset: off, Length: r.length, HostOffset: -1}
	switch r.kind {
	case runData:
		e.Allocated, e.Data, e.HostOffset = true, true, r.host
	case runZero:
		e.Allocated, e.Zero = true, true
	}
	return e, nil
}
