package qcow2

import (
	"fmt"

	"qimg/image"
)

// ReadAt reads guest data: mapped runs from the image (or data) file,
// zero runs as zeroes, unallocated runs from the backing node or as
// zeroes. It is safe for concurrent use.
func (q *Image) ReadAt(p []byte, off int64) (int, error) {
	if q.encrypt != nil && q.crypt == nil {
		return 0, errEncryptedData
	}
	done := 0
	for done < len(p) {
		q.meta.RLock()
		m, err := q.lookup(off+int64(done), int64(len(p)-done))
		q.meta.RUnlock()
		if err != nil {
			return done, err
		}
		buf := p[done : done+int(m.length)]
		if err := q.readRun(m, buf, off+int64(done)); err != nil {
			return done, err
		}
		done += len(buf)
	}
	return done, nil
}

func (q *Image) readRun(m mapping, buf []byte, guest int64) error {
	switch m.typ {
	case ctNormal:
		if q.crypt != nil {
			return q.readDecrypted(buf, m.host, guest)
		}
		return q.readHost(buf, m.host)
	case ctZero, ctZeroAlloc:
		clear(buf)
		return nil
	case ctUnallocated, ctUnallocAlloc:
		if q.backing != nil {
			q.event(image.EvReadBackingAIO)
			return q.backing.ReadPadded(buf, guest)
		}
		clear(buf)
		return nil
	case ctCompressed:
		if q.encrypt != nil {
			return errIO // qemu writes no compressed clusters in encrypted images
		}
		cluster, err := q.readCompressed(m.entry)
		if err != nil {
			return err
		}
		copy(buf, cluster[guest&(q.clusterSize-1):])
		return nil
	}
	return fmt.Errorf("qcow2: unknown cluster type %d", m.typ)
}

// readHost reads guest data at host offset off of the data file. Bytes
// past its end read as zeroes, as qemu reads them: the last cluster of an
// image may be short, an external data file shorter than the image, and
// a truncated image keeps its tables.
func (q *Image) readHost(buf []byte, off int64) error {
	d := q.dataNode()
	d.Event(image.EvReadAIO)
	return d.ReadPadded(buf, off)
}

// maxInflatedBytes bounds the cache of decompressed clusters, which
// spares small reads within one compressed cluster from inflating it again.
const maxInflatedBytes = 4 << 20

// readCompressed reads and inflates the compressed cluster of entry e. The
// result is shared: callers only read it.
func (q *Image) readCompressed(e l2Entry) ([]byte, error) {
	cache := q.inflatedCache()
	key := int64(e &^ oflagCopied)
	if v, ok := cache.peek(key); ok {
		return v, nil
	}
	// inflate outside the cache's lock: readers decompress in parallel
	v, err := q.inflate(e)
	if err != nil {
		return nil, err
	}
	cache.put(key, v)
	return v, nil
}

func (q *Image) inflatedCache() *lru[[]byte] {
	q.inflatedOnce.Do(func() {
		q.inflated = newLRU[[]byte](int(max(2, maxInflatedBytes/q.clusterSize)))
	})
	return q.inflated
}

// inflate reads and decompresses the compressed cluster of entry e.
func (q *Image) inflate(e l2Entry) ([]byte, error) {
	off, length := compressedDescriptor(e, q.clusterBits)
	size := q.file.Size()
	if off >= size || off < q.clusterSize {
		// qemu reads zeroes there, which do not inflate: EIO
		return nil, errIO
	}
	// the sector count may run past the end of the file: read what exists
	length = min(length, size-off)
	in := make([]byte, length)
	q.event(image.EvReadCompressed)
	if _, err := q.file.ReadAt(in, off); err != nil {
		return nil, err
	}
	out := make([]byte, q.clusterSize)
	if err := decompress(q.h.compressionType, in, out); err != nil {
		return nil, errIO // as qemu words a cluster that does not inflate
	}
	return out, nil
}

// BlockStatus describes the run at off: allocated runs (data, zero or
// compressed), and unallocated ones, merged over adjacent entries.
func (q *Image) BlockStatus(off, length int64) (image.Extent, error) {
	q.meta.RLock()
	m, err := q.lookup(off, length)
	q.meta.RUnlock()
	if err != nil {
		return image.Extent{}, err
	}
	e := image.Extent{Offset: off, Length: m.length, HostOffset: -1}
	switch m.typ {
	case ctNormal:
		e.Allocated, e.Data, e.HostOffset = true, true, m.host
		// in images with preallocated metadata, ask the file whether the
		// data is a hole there, as qemu's block layer does: such runs
		// read as zeroes
		host := q.dataNode()
		if size := host.Size(); m.host < size && q.metadataPreallocated() {
			fe, err := host.BlockStatus(m.host, min(m.length, size-m.host))
			if err == nil && fe.Length > 0 {
				e.Length = fe.Length
				e.Zero = fe.Zero && !fe.Data
			}
		}
	case ctZero:
		e.Allocated, e.Zero = true, true
	case ctZeroAlloc:
		e.Allocated, e.Zero = true, true
		if m.host >= 0 {
			e.HostOffset = m.host
		}
	case ctCompressed:
		e.Allocated, e.Data = true, true
	case ctUnallocated, ctUnallocAlloc:
		if q.backing == nil {
			e.Zero = true
		}
		// a subcluster of an allocated cluster keeps its place, as
		// qemu's status (and so qemu-img map) reports it
		if m.typ == ctUnallocAlloc && m.host >= 0 {
			e.HostOffset = m.host
		}
	}
	if q.encrypt != nil {
		// encrypted data has no place a reader could use, as qemu says
		e.HostOffset = -1
	}
	return e, nil
}

// metadataPreallocated reports, once per open image, whether more clusters
// have a refcount than the file has blocks allocated: an image made with
// preallocation=metadata, whose data clusters are holes in the file
// (qemu's qcow2_detect_metadata_preallocation).
func (q *Image) metadataPreallocated() bool {
	q.preallocOnce.Do(func() {
		a, ok := q.file.Driver().(image.AllocatedSizer)
		if !ok {
			return
		}
		real := a.AllocatedSize()
		if real < 0 {
			return
		}
		q.meta.RLock()
		defer q.meta.RUnlock()
		r := q.rc
		if r == nil {
			r = newRefcounts(q)
			if r.load() != nil {
				return
			}
		}
		realClusters := real / q.clusterSize
		threshold := max(realClusters*10/9, realClusters+2)
		end := (q.file.Size() + q.clusterSize - 1) >> q.clusterBits
		var count int64
		for i := int64(0); i < end && count < threshold; i++ {
			v, err := r.get(i)
			if err != nil {
				return
			}
			if v != 0 {
				count++
			}
		}
		q.prealloc = count >= threshold
	})
	return q.prealloc
}
