package qcow2

import (
	"fmt"

	"qimg/image"
)

// snapshot is one entry of the snapshot table ("Snapshot table entry").
type snapshot struct {
	l1TableOffset uint64
	l1Size        uint32
	id, name      string
	dateSec       uint32
	dateNsec      uint32
	vmClockNsec   uint64
	vmStateSize   uint64
	diskSize      uint64
	icount        int64 // -1 when not recorded
	extra         []byte
}

// readSnapshots reads the snapshot table. What lies beyond the end of the
// file reads as zeroes, as qemu reads it; sizes beyond qemu's limits fail
// the whole read (repairs belong to check -r).
func (q *Image) readSnapshots() ([]snapshot, error) {
	h := q.h
	n := int(h.nbSnapshots)
	if n == 0 {
		return nil, nil
	}
	off := int64(h.snapshotsOffset)
	var total int64
	snaps := make([]snapshot, 0, min(n, 1024))
	for i := 0; i < n; i++ {
		if total > maxSnapshotTableBytes {
			return nil, image.Corrupt("%s: snapshot table too large", q.filename)
		}
		var hdr [snapHeaderSize]byte
		if err := q.file.ReadPadded(hdr[:], off); err != nil {
			return nil, err
		}
		s := snapshot{
			l1TableOffset: be.Uint64(hdr[0:]),
			l1Size:        be.Uint32(hdr[8:]),
			dateSec:       be.Uint32(hdr[16:]),
			dateNsec:      be.Uint32(hdr[20:]),
			vmClockNsec:   be.Uint64(hdr[24:]),
			vmStateSize:   uint64(be.Uint32(hdr[32:])),
			icount:        -1,
		}
		idSize := int64(be.Uint16(hdr[12:]))
		nameSize := int64(be.Uint16(hdr[14:]))
		extraSize := int64(be.Uint32(hdr[36:]))
		if extraSize > maxSnapshotExtraData {
			return nil, image.Corrupt("%s: snapshot %d: extra data too large", q.filename, i)
		}
		rest := extraSize + idSize + nameSize
		buf := make([]byte, rest)
		if err := q.file.ReadPadded(buf, off+snapHeaderSize); err != nil {
			return nil, err
		}
		s.extra = buf[:extraSize]
		if extraSize >= 8 {
			s.vmStateSize = be.Uint64(s.extra)
		}
		if extraSize >= 16 {
			s.diskSize = be.Uint64(s.extra[8:])
		} else {
			s.diskSize = h.size
		}
		if extraSize >= 24 {
			s.icount = int64(be.Uint64(s.extra[16:]))
		}
		s.id = string(buf[extraSize : extraSize+idSize])
		s.name = string(buf[extraSize+idSize:])
		size := (snapHeaderSize + rest + 7) &^ 7
		off += size
		total += size
		snaps = append(snaps, s)
	}
	return snaps, nil
}

// snapshotInfos converts the table for info.
func snapshotInfos(snaps []snapshot) []image.SnapshotInfo {
	out := make([]image.SnapshotInfo, 0, len(snaps))
	for _, s := range snaps {
		si := image.SnapshotInfo{
			ID:          s.id,
			Name:        s.name,
			VMStateSize: int64(s.vmStateSize),
			DateSec:     int64(s.dateSec),
			DateNsec:    int64(s.dateNsec),
			VMClockSec:  int64(s.vmClockNsec / 1e9),
			VMClockNsec: int64(s.vmClockNsec % 1e9),
		}
		if s.icount != -1 {
			ic := s.icount
			si.ICount = &ic
		}
		out = append(out, si)
	}
	return out
}

func (s snapshot) String() string { return fmt.Sprintf("snapshot %s (%s)", s.id, s.name) }

// appendSnapshotEntry appends one snapshot table entry, aligned to 8
// bytes, with extraSize bytes of extra data (at least the snapExtraKnown
// bytes qemu knows: vm_state_size_large, disk_size, icount, written from
// the parsed values; extra data beyond them is kept as read).
func appendSnapshotEntry(buf []byte, s snapshot, extraSize uint32) []byte {
	buf = append(buf, make([]byte, (len(buf)+7)&^7-len(buf))...)
	extraSize = max(extraSize, snapExtraKnown)
	var h [snapHeaderSize]byte
	be.PutUint64(h[0:], s.l1TableOffset)
	be.PutUint32(h[8:], s.l1Size)
	be.PutUint16(h[12:], uint16(len(s.id)))
	be.PutUint16(h[14:], uint16(len(s.name)))
	be.PutUint32(h[16:], s.dateSec)
	be.PutUint32(h[20:], s.dateNsec)
	be.PutUint64(h[24:], s.vmClockNsec)
	if s.vmStateSize <= 0xffffffff {
		be.PutUint32(h[32:], uint32(s.vmStateSize))
	}
	be.PutUint32(h[36:], extraSize)
	buf = append(buf, h[:]...)
	var known [snapExtraKnown]byte
	be.PutUint64(known[0:], s.vmStateSize)
	be.PutUint64(known[8:], s.diskSize)
	be.PutUint64(known[16:], uint64(s.icount))
	buf = append(buf, known[:]...)
	// extra data qemu does not know, kept as read (zero-filled if short)
	rest := make([]byte, extraSize-snapExtraKnown)
	copy(rest, s.extra[min(len(s.extra), snapExtraKnown):])
	buf = append(buf, rest...)
	buf = append(buf, s.id...)
	return append(buf, s.name...)
}
