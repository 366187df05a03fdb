package qed

import (
	"encoding/binary"

	"qimg/image"
)

// maxAllocRun caps the clusters one allocating write handles at once, so
// that its copy-on-write buffer stays small.
const maxAllocRun = 4 << 20

// WriteAt writes guest data: allocated clusters in place, others into
// new clusters at the end of the file (filled from the backing file
// around the written part), linked through the L2 and L1 tables. Writes
// are serialised; the image carries the need-check flag while
// allocations are under way, as qemu's QED driver does.
func (q *Image) WriteAt(p []byte, off int64) (int, error) {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		r, err := q.find(pos, int64(len(p)-done))
		if err != nil {
			return done, err
		}
		if r.kind == runData {
			q.file.Event(image.EvWriteAIO)
			if err := q.file.WriteGrowing(p[done:done+int(r.length)], r.host); err != nil {
				return done, err
			}
			done += int(r.length)
			continue
		}
		n, err := q.allocatingWrite(p[done:], pos, r)
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// allocatingWrite writes the start of p (at guest pos, where run r of
// unallocated or zero clusters begins) into newly allocated clusters and
// returns how many bytes of p it wrote.
func (q *Image) allocatingWrite(p []byte, pos int64, r run) (int, error) {
	cs := q.l.clusterSize
	length := min(r.length, int64(len(p)), maxAllocRun)
	start := pos &^ (cs - 1)
	end := (pos + length + cs - 1) &^ (cs - 1)
	buf := make([]byte, end-start)
	if err := q.fillAround(buf, start, pos-start, length, r.kind); err != nil {
		return 0, err
	}
	copy(buf[pos-start:], p[:length])
	if err := q.markNeedCheck(); err != nil {
		return 0, err
	}
	host := q.allocate(int64(len(buf)))
	if start < pos || end > pos+length {
		q.file.Event(image.EvCOWWrite) // qemu writes the filled parts first
	}
	q.file.Event(image.EvWriteAIO)
	if err := q.file.WriteGrowing(buf, host); err != nil {
		return 0, err
	}
	if err := q.linkClusters(start, host, int64(len(buf))/cs); err != nil {
		return 0, err
	}
	return int(length), nil
}

// fillAround fills the parts of the cluster buffer buf (guest start)
// that the write (at skip, length bytes) leaves: from the backing file
// for unallocated clusters, zeroes otherwise.
func (q *Image) fillAround(buf []byte, start, skip, length int64, kind runKind) error {
	if kind != runUnallocated || q.backing == nil {
		return nil
	}
	if skip > 0 {
		q.file.Event(image.EvReadBackingAIO)
		if err := q.backing.ReadPadded(buf[:skip], start); err != nil {
			return err
		}
	}
	if tail := skip + length; tail < int64(len(buf)) {
		q.file.Event(image.EvReadBackingAIO)
		if err := q.backing.ReadPadded(buf[tail:], start+tail); err != nil {
			return err
		}
	}
	return nil
}

// allocate reserves n bytes (whole clusters) at the end of the file.
func (q *Image) allocate(n int64) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	off := q.l.fileSize
	q.l.fileSize += n
	return off
}

// linkClusters points the L2 entries of n guest clusters from start at
// the host clusters from host, creating the L2 table when there is none.
func (q *Image) linkClusters(start, host, n int64) error {
	coverage := q.l.tableNelems << q.l.clusterBits
	l1i := start / coverage
	idx := (start % coverage) >> q.l.clusterBits
	entries := make([]byte, n*8)
	for i := range n {
		binary.LittleEndian.PutUint64(entries[i*8:], uint64(host+i*q.l.clusterSize))
	}
	q.mu.Lock()
	l2off := q.l1[l1i]
	q.mu.Unlock()
	q.file.Event(image.EvL2Update)
	if l2off != 0 {
		if err := q.file.WriteGrowing(entries, int64(l2off)+idx*8); err != nil {
			q.dropCachedL2(l2off)
			return err
		}
		q.updateCachedL2(l2off, idx, entries)
		return nil
	}
	table := make([]byte, q.l.tableBytes)
	copy(table[idx*8:], entries)
	l2 := q.allocate(q.l.tableBytes)
	if err := q.file.WriteGrowing(table, l2); err != nil {
		return err
	}
	q.cacheTable(uint64(l2), table)
	var e [8]byte
	binary.LittleEndian.PutUint64(e[:], uint64(l2))
	q.file.Event(image.EvL1Update)
	if err := q.file.WriteGrowing(e[:], int64(q.h.l1TableOffset)+l1i*8); err != nil {
		return err
	}
	q.mu.Lock()
	q.l1[l1i] = uint64(l2)
	q.mu.Unlock()
	return nil
}

// cacheTable caches a table just written, as qemu keeps a new L2 table
// in its cache (the next write through it loads nothing).
func (q *Image) cacheTable(off uint64, table []byte) {
	n := min(l2Chunk, q.l.tableNelems)
	for start := int64(0); start+n*8 <= int64(len(table)); start += n * 8 {
		q.l2Cache.Put(off+uint64(start), table[start:start+n*8])
	}
}

// updateCachedL2 stores entries (encoded, from index idx) written to the
// table at off in the cached pieces that hold them.
func (q *Image) updateCachedL2(off uint64, idx int64, entries []byte) {
	n := min(l2Chunk, q.l.tableNelems)
	for i := int64(0); i < int64(len(entries))/8; i++ {
		q.l2Cache.SetEntry(off+uint64((idx+i)/n*n*8), (idx+i)%n, binary.LittleEndian.Uint64(entries[i*8:]))
	}
}

// dropCachedL2 forgets the cached pieces of the table at off.
func (q *Image) dropCachedL2(off uint64) {
	q.l2Cache.Drop(off, uint64(q.l.tableBytes))
}

// markNeedCheck sets the need-check flag on disk before the first
// allocation, so that an interrupted write leaves an image that the next
// writable open checks.
func (q *Image) markNeedCheck() error {
	if q.h.features&featureNeedCheck != 0 {
		return nil
	}
	q.h.features |= featureNeedCheck
	if err := q.writeHeader(); err != nil {
		return err
	}
	return q.file.Flush()
}

func (q *Image) writeHeader() error {
	return q.file.WriteGrowing(q.h.encode(), 0)
}

// WriteZeroes leaves alone what already reads as zeroes and writes
// zeroes over the rest.
func (q *Image) WriteZeroes(off, length int64, _ bool) error {
	for length > 0 {
		r, err := q.find(off, length)
		if err != nil {
			return err
		}
		if r.kind == runData || r.kind == runUnallocated && q.backing != nil {
			if err := q.writeZeroBuffers(off, r.length); err != nil {
				return err
			}
		}
		off += r.length
		length -= r.length
	}
	return nil
}

func (q *Image) writeZeroBuffers(off, length int64) error {
	buf := make([]byte, min(length, 1<<20))
	for length > 0 {
		k := min(length, int64(len(buf)))
		if _, err := q.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off += k
		length -= k
	}
	return nil
}

// Flush makes the written data durable.
func (q *Image) Flush() error { return q.file.Flush() }

// Close clears the need-check flag once everything written is on disk:
// the image is consistent again.
func (q *Image) Close() error {
	if !q.writable || q.h.features&featureNeedCheck == 0 {
		return nil
	}
	if err := q.file.Flush(); err != nil {
		return err
	}
	q.h.features &^= featureNeedCheck
	if err := q.writeHeader(); err != nil {
		return err
	}
	return q.file.Flush()
}
