package qcow2

import (
	"bufio"
	"fmt"
	"io"
	"math"

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

// readSnapshots reads the snapshot table as qemu's qcow2_read_snapshots
// does at open: strict (a bad entry fails the whole read; repairs belong
// to check -r), the table read in order through one buffer, and what lies
// beyond the end of the file read as zeroes. The header check has bounded
// the entry count; the table's total size is bounded here.
func (q *Image) readSnapshots() ([]snapshot, error) {
	n := int(q.h.nbSnapshots)
	if n == 0 {
		return nil, nil
	}
	r := bufio.NewReaderSize(&paddedReader{file: q.file, off: int64(q.h.snapshotsOffset)}, 64<<10)
	snaps := make([]snapshot, 0, min(n, 1024))
	var total int64
	for i := 0; i < n; i++ {
		s, size, err := readSnapshotEntry(r, i, q.h.size)
		if err != nil {
			return nil, err
		}
		// qemu's count: entries aligned to 8 bytes, the last one not
		if total = (total+7)&^7 + size; total > maxSnapshotTableBytes {
			return nil, image.Corrupt("Snapshot table is too big")
		}
		snaps = append(snaps, s)
	}
	return snaps, nil
}

// readSnapshotEntry reads entry i of the table from r, which stands at
// the entry's 8-byte aligned start, and leaves r at the next one. It
// returns the entry's size without the padding after it. diskSize is the image's, for entries
// without one of their own.
func readSnapshotEntry(r *bufio.Reader, i int, diskSize uint64) (snapshot, int64, error) {
	var hdr [snapHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return snapshot{}, 0, err
	}
	s := snapshot{
		l1TableOffset: be.Uint64(hdr[0:]),
		l1Size:        be.Uint32(hdr[8:]),
		dateSec:       be.Uint32(hdr[16:]),
		dateNsec:      be.Uint32(hdr[20:]),
		vmClockNsec:   be.Uint64(hdr[24:]),
		vmStateSize:   uint64(be.Uint32(hdr[32:])),
		diskSize:      diskSize,
		icount:        -1,
	}
	idSize := int64(be.Uint16(hdr[12:]))
	nameSize := int64(be.Uint16(hdr[14:]))
	extraSize := int64(be.Uint32(hdr[36:]))
	if extraSize > maxSnapshotExtraData {
		return snapshot{}, 0, image.Corrupt("Too much extra metadata in snapshot table entry %d", i)
	}
	buf := make([]byte, extraSize+idSize+nameSize) // bounded: 1 KiB + 2 × 64 KiB
	if _, err := io.ReadFull(r, buf); err != nil {
		return snapshot{}, 0, err
	}
	s.extra = buf[:extraSize]
	if extraSize >= 8 {
		s.vmStateSize = be.Uint64(s.extra)
	}
	if extraSize >= 16 {
		s.diskSize = be.Uint64(s.extra[8:])
	}
	if extraSize >= 24 {
		s.icount = int64(be.Uint64(s.extra[16:]))
	}
	s.id = string(buf[extraSize : extraSize+idSize])
	s.name = string(buf[extraSize+idSize:])
	size := snapHeaderSize + int64(len(buf))
	aligned := (size + 7) &^ 7
	if _, err := r.Discard(int(aligned - size)); err != nil {
		return snapshot{}, 0, err
	}
	return s, size, nil
}

// paddedReader reads the image file from off on, zeroes past its end.
type paddedReader struct {
	file *image.Node
	off  int64
}

func (p *paddedReader) Read(b []byte) (int, error) {
	if err := p.file.ReadPadded(b, p.off); err != nil {
		return 0, err
	}
	p.off += int64(len(b))
	return len(b), nil
}

// qemu hands snapshots around in a QEMUSnapshotInfo, whose id_str and
// name are char[128] and char[256]: names are cut to 255 bytes when a
// snapshot is created, and ids and names when a table is listed.
const (
	maxSnapshotInfoID   = 127
	maxSnapshotInfoName = 255
)

// cut returns s cut to n bytes, as qemu's pstrcpy does.
func cut(s string, n int) string { return s[:min(len(s), n)] }

// snapshotInfos converts the table for info.
func snapshotInfos(snaps []snapshot) []image.SnapshotInfo {
	out := make([]image.SnapshotInfo, 0, len(snaps))
	for _, s := range snaps {
		si := image.SnapshotInfo{
			ID:          cut(s.id, maxSnapshotInfoID),
			Name:        cut(s.name, maxSnapshotInfoName),
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

// snapshotKeys lists the ids and names the selectors match against.
func snapshotKeys(snaps []snapshot) []image.SnapshotKey {
	keys := make([]image.SnapshotKey, len(snaps))
	for i, s := range snaps {
		keys[i] = image.SnapshotKey{ID: s.id, Name: s.name}
	}
	return keys
}

// snapshotL1Error is what qemu's qcow2_validate_table says of a
// snapshot's L1 table: its words, and the text of the errno that snapshot
// -a prints in their place.
type snapshotL1Error struct{ msg, errno string }

func (e *snapshotL1Error) Error() string { return e.msg }
func (e *snapshotL1Error) Unwrap() error { return image.ErrCorrupt }

// checkL1 validates the snapshot's L1 table before it is read, as qemu
// does before it loads, applies or deletes a snapshot.
func (s snapshot) checkL1(clusterSize int64) error {
	if int64(s.l1Size) > maxL1Bytes/8 {
		return &snapshotL1Error{"Snapshot L1 table too large", "File too large"}
	}
	if s.l1TableOffset > math.MaxInt64-uint64(s.l1Size)*8 || s.l1TableOffset%uint64(clusterSize) != 0 {
		return &snapshotL1Error{"Snapshot L1 table offset invalid", "Invalid argument"}
	}
	return nil
}

// readSnapshotL1 reads the snapshot's L1 table once checkL1 has passed.
func (q *Image) readSnapshotL1(s snapshot) ([]uint64, error) {
	if err := s.checkL1(q.clusterSize); err != nil {
		return nil, err
	}
	return q.readTable(int64(s.l1TableOffset), int(s.l1Size))
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
