// Package qcow is the qcow (version 1) format driver: a header, one L1
// table of L2 tables, data and compressed clusters, an optional backing
// file, and qemu's legacy AES encryption, read and written.
package qcow

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"sync"
	"syscall"

	"qimg/formats/luks"
	"qimg/image"
)

func init() {
	image.Register(&image.Format{
		Name:  "qcow",
		Probe: probe,
		Open:  Open,
		// the key of AES-encrypted images, part of the node's name
		OpenOptions: []image.OptionSpec{
			{Name: "encrypt.format", Type: image.OptString},
			{Name: "encrypt.key-secret", Type: image.OptString},
		},
		NameOptions:   []string{"encrypt.key-secret"},
		CreateOptions: createOptions,
		CheckCreate:   checkCreate,
		Create:        Create,
	})
}

const (
	magic          = "QFI\xfb"
	version        = 1
	headerSize     = 48
	cryptAES       = 1
	flagCompressed = uint64(1) << 63
	maxBackingName = 1023
)

// probe is QEMU's qcow_probe, shared with the placeholder probes.
func probe(h []byte, _ string) int { return image.ProbeQcowVersion(h, true) }

// header is the qcow header, big-endian on disk.
type header struct {
	magic         string
	version       uint32
	backingOffset uint64
	backingSize   uint32
	size          uint64
	clusterBits   uint8
	l2Bits        uint8
	cryptMethod   uint32
	l1TableOffset uint64
}

func parseHeader(b []byte) header {
	var buf [headerSize]byte
	copy(buf[:], b)
	be := binary.BigEndian
	return header{
		magic:         string(buf[:4]),
		version:       be.Uint32(buf[4:]),
		backingOffset: be.Uint64(buf[8:]),
		backingSize:   be.Uint32(buf[16:]),
		size:          be.Uint64(buf[24:]),
		clusterBits:   buf[32],
		l2Bits:        buf[33],
		cryptMethod:   be.Uint32(buf[36:]),
		l1TableOffset: be.Uint64(buf[40:]),
	}
}

// validate checks the header as qemu's qcow_open, in its order and words.
func (h *header) validate() error {
	if h.magic != magic {
		return image.Errorf(image.ErrWrongFormat, "Image not in qcow format")
	}
	if h.version != version {
		return image.Errorf(image.ErrUnsupported, "qcow (v%d) does not support qcow version %d", version, h.version)
	}
	if h.size <= 1 {
		return image.Errorf(image.ErrCorrupt, "Image size is too small (must be at least 2 bytes)")
	}
	if h.clusterBits < 9 || h.clusterBits > 16 {
		return image.Errorf(image.ErrCorrupt, "Cluster size must be between 512 and 64k")
	}
	if h.l2Bits < 9-3 || h.l2Bits > 16-3 {
		return image.Errorf(image.ErrCorrupt, "L2 table size must be between 512 and 64k")
	}
	if h.cryptMethod > cryptAES {
		return image.Errorf(image.ErrCorrupt, "invalid encryption method in qcow header")
	}
	shift := uint(h.clusterBits) + uint(h.l2Bits)
	if h.size > math.MaxUint64-(uint64(1)<<shift) {
		return image.Errorf(image.ErrCorrupt, "Image too large")
	}
	if l1 := (h.size + (1 << shift) - 1) >> shift; l1 > math.MaxInt32/8 {
		return image.Errorf(image.ErrCorrupt, "Image too large")
	}
	return nil
}

// errNoKey answers any access to the data of an AES-encrypted image
// opened without a key (the open option encrypt.key-secret): such images
// open for info only, and never read as wrong data.
var errNoKey = image.Errorf(image.ErrUnsupported, "Parameter 'encrypt.key-secret' is required for cipher")

// Image is an open qcow image.
type Image struct {
	file    *image.Node
	backing *image.Node
	h       header
	cs      int64
	l1      []uint64 // the entries inside the file; those past it are 0

	backingName string
	crypt       *luks.Cipher // nil: not encrypted, or no key given

	wmu     sync.Mutex // serialises writes
	fileEnd int64      // where the next allocation goes, guarded by wmu

	mu      sync.Mutex // guards l1
	l2Cache *image.TableCache
}

// Open reads and validates the header, the backing file name and the L1
// table.
func Open(o *image.OpenContext) (image.Driver, error) {
	head := make([]byte, headerSize)
	if err := o.File.ReadPadded(head, 0); err != nil {
		return nil, err
	}
	q := &Image{file: o.File, h: parseHeader(head), l2Cache: image.NewTableCache(binary.BigEndian, 256, image.EvL2Load)}
	if err := q.h.validate(); err != nil {
		return nil, err
	}
	if q.h.cryptMethod != 0 {
		c, err := newSectorCipher(o)
		if err != nil && (o.Writable || !errors.Is(err, errNoKey)) {
			return nil, err
		}
		// without a key the image opens read-only for info; its data
		// answers errNoKey
		q.crypt = c
	}
	q.cs = 1 << q.h.clusterBits
	q.fileEnd = o.File.Size()
	if err := q.readL1(); err != nil {
		return nil, err
	}
	if err := q.readBackingName(); err != nil {
		return nil, err
	}
	return q, nil
}

// readL1 reads the L1 entries that lie inside the file: beyond its end
// the table reads as zeroes, so its size never decides an allocation
// larger than the file.
func (q *Image) readL1() error {
	shift := uint(q.h.clusterBits) + uint(q.h.l2Bits)
	n := int64((q.h.size + (1 << shift) - 1) >> shift)
	fileSize := q.file.Size()
	if q.h.l1TableOffset >= uint64(fileSize) {
		n = 0
	} else {
		n = min(n, (fileSize-int64(q.h.l1TableOffset)+7)/8)
	}
	buf := make([]byte, n*8)
	if err := q.file.ReadPadded(buf, int64(q.h.l1TableOffset)); err != nil {
		return err
	}
	q.l1 = make([]uint64, n)
	for i := range q.l1 {
		q.l1[i] = binary.BigEndian.Uint64(buf[i*8:])
	}
	return nil
}

func (q *Image) readBackingName() error {
	if q.h.backingOffset == 0 {
		return nil
	}
	if q.h.backingSize > maxBackingName {
		return image.Errorf(image.ErrCorrupt, "Backing file name too long")
	}
	name := make([]byte, q.h.backingSize)
	if err := q.file.ReadPadded(name, int64(q.h.backingOffset)); err != nil {
		return err
	}
	q.backingName = string(name)
	return nil
}

// Size is the header's size rounded down to whole sectors, as qemu has it.
func (q *Image) Size() int64 { return int64(q.h.size / 512 * 512) }

func (q *Image) Close() error { return nil }

func (q *Image) BackingFile() (string, string) { return q.backingName, "" }

func (q *Image) SetBacking(n *image.Node) { q.backing = n }

// Info fills what qemu reports for qcow: the cluster size.
func (q *Image) Info(info *image.Info) error {
	info.ClusterSize = q.cs
	info.Encrypted = q.h.cryptMethod != 0
	dirty := false
	info.DirtyFlag = &dirty
	return nil
}

// entry is the L2 entry of the cluster holding guest offset off, 0 when
// unallocated.
func (q *Image) entry(off int64) (uint64, error) {
	shift := uint(q.h.clusterBits) + uint(q.h.l2Bits)
	l1i := off >> shift
	q.mu.Lock()
	var l2off uint64
	if l1i < int64(len(q.l1)) {
		l2off = q.l1[l1i]
	}
	q.mu.Unlock()
	if l2off == 0 {
		return 0, nil
	}
	table, err := q.l2Cache.Get(q.file, l2off, int64(1)<<q.h.l2Bits)
	if err != nil {
		return 0, err
	}
	return table[(off>>q.h.clusterBits)&(1<<q.h.l2Bits-1)], nil
}

// clampOffset keeps an offset from the image inside int64: anything
// that large lies past the end of the file and reads as zeroes.
func clampOffset(off uint64) int64 {
	return int64(min(off, math.MaxInt64/2))
}

// ReadAt reads guest data cluster by cluster.
func (q *Image) ReadAt(p []byte, off int64) (int, error) {
	if q.h.cryptMethod != 0 && q.crypt == nil {
		return 0, errNoKey
	}
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		into := pos & (q.cs - 1)
		n := int(min(q.cs-into, int64(len(p)-done)))
		buf := p[done : done+n]
		e, err := q.entry(pos)
		if err != nil {
			return done, err
		}
		switch {
		case e == 0 && q.backing != nil:
			q.file.Event(image.EvReadBackingAIO)
			err = q.backing.ReadPadded(buf, pos)
		case e == 0:
			clear(buf)
		case e&flagCompressed != 0:
			err = q.readCompressed(buf, e, into)
		case q.crypt != nil:
			err = q.readEncrypted(buf, e, pos)
		default:
			q.file.Event(image.EvReadAIO)
			err = q.file.ReadPadded(buf, clampOffset(e+uint64(into)))
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// readCompressed inflates a compressed cluster (raw deflate) and copies
// the part asked for; a cluster that does not inflate to its full size
// is an I/O error, as in qemu.
func (q *Image) readCompressed(buf []byte, e uint64, into int64) error {
	shift := 63 - uint(q.h.clusterBits)
	csize := int64((e >> shift) & (uint64(q.cs) - 1))
	coff := e & (uint64(1)<<shift - 1)
	comp := make([]byte, csize)
	q.file.Event(image.EvReadCompressed)
	if err := q.file.ReadPadded(comp, clampOffset(coff)); err != nil {
		return err
	}
	out := make([]byte, q.cs)
	r := flate.NewReader(bytes.NewReader(comp))
	if _, err := io.ReadFull(r, out); err != nil {
		return image.Errorf(syscall.EIO, "Input/output error")
	}
	copy(buf, out[into:])
	return nil
}

// BlockStatus answers as qemu's qcow_co_block_status, merging clusters
// of one kind (contiguous in the file for data).
func (q *Image) BlockStatus(off, length int64) (image.Extent, error) {
	if q.h.cryptMethod != 0 && q.crypt == nil {
		return image.Extent{}, errNoKey
	}
	first, err := q.entry(off)
	if err != nil {
		return image.Extent{}, err
	}
	into := off & (q.cs - 1)
	n := min(q.cs-into, length)
	for n < length {
		e, err := q.entry(off + n)
		if err != nil {
			return image.Extent{}, err
		}
		if !continues(first, e, off+n-off+into, q.cs) {
			break
		}
		n += min(q.cs, length-n)
	}
	ext := image.Extent{Offset: off, Length: n, HostOffset: -1}
	switch {
	case first == 0:
	case first&flagCompressed != 0:
		ext.Allocated, ext.Data = true, true
	case q.crypt != nil:
		// encrypted data has no place a reader could use (qemu's
		// qcow_co_block_status answers as for compressed clusters)
		ext.Allocated, ext.Data = true, true
	default:
		ext.Allocated, ext.Data = true, true
		ext.HostOffset = int64(first) + into
	}
	return ext, nil
}

// continues tells whether entry e, dist bytes after the start of the
// first run's cluster, extends the run: unallocated after unallocated,
// the next data cluster in the file after data; compressed clusters
// stand alone.
func continues(first, e uint64, dist, cs int64) bool {
	switch {
	case first == 0:
		return e == 0
	case first&flagCompressed != 0:
		return false
	default:
		return e&flagCompressed == 0 && e != 0 && e == first+uint64(dist)
	}
}
