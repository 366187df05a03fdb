package qcow

import (
	"encoding/binary"
	"math"

	"qimg/image"
)

// WriteAt writes guest data cluster by cluster: allocated clusters in
// place; unallocated and compressed ones into a new cluster at the end of
// the file (after a new L2 table when there is none, as qemu lays them
// out), completed from the old content. Writes are serialised.
func (q *Image) WriteAt(p []byte, off int64) (int, error) {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		into := pos & (q.cs - 1)
		n := int(min(q.cs-into, int64(len(p)-done)))
		e, err := q.entry(pos)
		if err != nil {
			return done, err
		}
		switch {
		case e != 0 && e&flagCompressed == 0 && q.crypt != nil:
			err = q.writeEncrypted(p[done:done+n], e, pos)
		case e != 0 && e&flagCompressed == 0:
			q.file.Event(image.EvWriteAIO)
			err = q.file.WriteGrowing(p[done:done+n], clampOffset(e+uint64(into)))
		default:
			err = q.allocateCluster(p[done:done+n], pos, into)
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// allocateCluster writes p (at guest pos, into bytes inside its cluster)
// into a new cluster holding what the guest saw there before.
func (q *Image) allocateCluster(p []byte, pos, into int64) error {
	start := pos - into
	q.file.Event(image.EvClusterAlloc)
	buf := make([]byte, q.cs)
	if int64(len(p)) < q.cs {
		if _, err := q.ReadAt(buf[:min(q.cs, q.Size()-start)], start); err != nil {
			return err
		}
	}
	copy(buf[into:], p)
	if q.crypt != nil {
		q.crypt.Encrypt(buf, uint64(start)/cryptSector)
	}
	l2off, err := q.l2ForWrite(pos)
	if err != nil {
		return err
	}
	host := alignUp(q.fileEnd, q.cs)
	q.file.Event(image.EvWriteAIO)
	if err := q.file.WriteGrowing(buf, host); err != nil {
		return err
	}
	q.fileEnd = host + q.cs
	q.file.Event(image.EvL2Update)
	return q.setL2Entry(l2off, pos, uint64(host))
}

// l2ForWrite returns the L2 table for guest offset pos, appending a
// zeroed one (cluster-aligned, as qemu does) and linking it into the L1
// table when there is none.
func (q *Image) l2ForWrite(pos int64) (uint64, error) {
	l1i := pos >> (uint(q.h.clusterBits) + uint(q.h.l2Bits))
	if l1i >= int64(len(q.l1)) {
		return 0, image.NotSupported("writing through an L1 table that lies past the end of the file")
	}
	if q.l1[l1i] != 0 {
		if q.l1[l1i] > math.MaxInt64/2 {
			return 0, image.Corrupt("L2 table offset %#x past the end of the file", q.l1[l1i])
		}
		return q.l1[l1i], nil
	}
	size := int64(8) << q.h.l2Bits
	l2 := alignUp(q.fileEnd, q.cs)
	q.file.Event(image.EvL2Load) // qemu raises it before writing a new table too
	if err := q.file.WriteGrowing(make([]byte, size), l2); err != nil {
		return 0, err
	}
	q.fileEnd = l2 + size
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(l2))
	q.file.Event(image.EvL1Update)
	if err := q.file.WriteGrowing(e[:], int64(q.h.l1TableOffset)+l1i*8); err != nil {
		return 0, err
	}
	q.mu.Lock()
	q.l1[l1i] = uint64(l2)
	q.mu.Unlock()
	return uint64(l2), nil
}

func alignUp(v, a int64) int64 { return (v + a - 1) &^ (a - 1) }

// Flush makes the written data durable.
func (q *Image) Flush() error { return q.file.Flush() }
