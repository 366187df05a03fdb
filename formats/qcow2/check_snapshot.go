package qcow2

import (
	"fmt"

	"qimg/image"
)

// The snapshot table as a check reads it (qemu's
// qcow2_check_read_snapshot_table): leniently, bytes beyond the end of the
// file read as zeroes, too much extra data in an entry is an error, or
// with FixErrors dropped; version 3 entries with less than the 16 bytes
// of extra data the specification requires are corruptions, which -r all
// repairs by writing the table anew (qemu's qcow2_write_snapshots).

// maxSnapshotsTableLength is qemu's QCOW_MAX_SNAPSHOTS_SIZE.
const maxSnapshotsTableLength = 64 << 20

// snapExtraKnown is the extra data qemu knows: vm_state_size_large,
// disk_size, icount.
const snapExtraKnown = 24

// checkSnapshot is one snapshot table entry as the check keeps it.
type checkSnapshot struct {
	snapshot
	extraSize uint32 // extra_data_size as kept (truncated when repaired)
}

// errTooBig is qemu's EFBIG as qemu-img check words it.
var errTooBig = image.Errorf(image.ErrCorrupt, "File too large")

// readCheckSnapshots reads the snapshot table; it returns the entries and
// the table's byte length. Corruptions found go to c.snap.
func (c *checker) readCheckSnapshots() ([]checkSnapshot, int64, error) {
	q := c.q
	h := q.h
	n := int(h.nbSnapshots) // at most maxSnapshots: the header check
	start := int64(h.snapshotsOffset)
	repair := c.fix&image.FixErrors != 0
	snaps := make([]checkSnapshot, 0, min(n, 1024))
	off := start
	var tableLength int64
	var hdr [snapHeaderSize]byte
	for i := 0; i < n; i++ {
		tableLength = (tableLength + 7) &^ 7
		off = (off + 7) &^ 7
		if err := c.readPadded(hdr[:], off); err != nil {
			return nil, 0, c.snapshotReadError(fmt.Errorf("Failed to read snapshot table: %w", err))
		}
		off += snapHeaderSize
		s := checkSnapshot{snapshot: snapshot{
			l1TableOffset: be.Uint64(hdr[0:]),
			l1Size:        be.Uint32(hdr[8:]),
			dateSec:       be.Uint32(hdr[16:]),
			dateNsec:      be.Uint32(hdr[20:]),
			vmClockNsec:   be.Uint64(hdr[24:]),
			vmStateSize:   uint64(be.Uint32(hdr[32:])),
			diskSize:      uint64(q.size) &^ 511, // qemu's total_sectors
			icount:        -1,
		}}
		idSize := int64(be.Uint16(hdr[12:]))
		nameSize := int64(be.Uint16(hdr[14:]))
		extra := be.Uint32(hdr[36:])
		s.extraSize = extra
		if extra > maxSnapshotExtraData {
			if !repair {
				c.logf("%s: ERROR failed to read the snapshot table: Too much extra metadata in snapshot table entry %d", progName(), i)
				c.logf("You can force-remove this extra metadata with qemu-img check -r all")
				c.res.checkErrors++
				return nil, 0, errTooBig
			}
			c.logf("Discarding too much extra metadata in snapshot table entry %d (%d > %d)", i, extra, maxSnapshotExtraData)
			c.snapCorruptions++
			s.extraSize = maxSnapshotExtraData
		}
		// the extra data kept (the rest of an oversized one is skipped)
		kept := make([]byte, s.extraSize)
		if err := c.readPadded(kept, off); err != nil {
			return nil, 0, c.snapshotReadError(fmt.Errorf("Failed to read snapshot table: %w", err))
		}
		s.extra = kept
		if s.extraSize >= 8 {
			s.vmStateSize = be.Uint64(kept)
		}
		if s.extraSize >= 16 {
			s.diskSize = be.Uint64(kept[8:])
		}
		if s.extraSize >= snapExtraKnown {
			s.icount = int64(be.Uint64(kept[16:]))
		}
		off += int64(extra)
		names := make([]byte, idSize+nameSize)
		if err := c.readPadded(names, off); err != nil {
			return nil, 0, c.snapshotReadError(fmt.Errorf("Failed to read snapshot table: %w", err))
		}
		s.id = cString(names[:idSize])
		s.name = cString(names[idSize:])
		off += idSize + nameSize
		tableLength += snapHeaderSize + int64(s.extraSize) + idSize + nameSize
		if tableLength > maxSnapshotsTableLength {
			if !repair {
				c.logf("%s: ERROR failed to read the snapshot table: Snapshot table is too big", progName())
				c.logf("You can force-remove all %d overhanging snapshots with qemu-img check -r all", n-i)
				c.res.checkErrors++
				return nil, 0, errTooBig
			}
			c.logf("Discarding %d overhanging snapshots (snapshot table is too big)", n-i)
			c.snapReduced += int64(n - i)
			break
		}
		snaps = append(snaps, s)
	}
	size := off - start
	if c.snapReduced > 0 {
		// the header counts the snapshots kept
		var b [4]byte
		be.PutUint32(b[:], uint32(len(snaps)))
		err := c.writeMeta(b[:], offNbSnapshots)
		if err == nil {
			err = c.flushFile()
		}
		if err != nil {
			c.res.checkErrors++
			c.logf("ERROR failed to update the snapshot count in the image header: %v", err)
			return nil, 0, err
		}
		h.nbSnapshots = uint32(len(snaps))
		c.res.corruptionsFixed += c.snapReduced
	}
	if h.version >= 3 {
		verb := "ERROR"
		if repair {
			verb = "Repairing"
		}
		for i, s := range snaps {
			if s.extraSize < 16 {
				c.snapCorruptions++
				c.logf("%s snapshot table entry %d is incomplete", verb, i)
			}
		}
	}
	return snaps, size, nil
}

func (c *checker) snapshotReadError(err error) error {
	c.res.checkErrors++
	c.logf("%s: ERROR failed to read the snapshot table: %v", progName(), err)
	return err
}

// fixSnapshotTable writes the snapshot table anew when the read found
// corruptions in it and FixErrors allows (qemu's
// qcow2_check_fix_snapshot_table and qcow2_write_snapshots): new clusters
// for the table, the entries with their full extra data, a flush, the
// header pointing to the new table (flushed), the old table freed.
func (c *checker) fixSnapshotTable() error {
	if c.snapCorruptions == 0 || c.fix&image.FixErrors == 0 {
		c.res.corruptions += c.snapCorruptions
		return nil
	}
	q := c.q
	if q.rc == nil {
		return image.ErrReadOnly
	}
	var buf []byte
	for _, s := range c.snapTable {
		buf = appendSnapshotEntry(buf, s.snapshot, s.extraSize)
	}
	if err := c.writeSnapshotTable(buf); err != nil {
		c.res.checkErrors++
		c.logf("ERROR failed to update the snapshot table: %v", err)
		return err
	}
	c.res.corruptionsFixed += c.snapCorruptions
	return nil
}

// writeSnapshotTable places buf in new clusters and points the header to
// it, then frees the old table.
func (c *checker) writeSnapshotTable(buf []byte) error {
	q := c.q
	h := q.h
	n := (int64(len(buf)) + c.cs - 1) / c.cs
	off, err := q.rc.alloc(max(n, 1))
	if err != nil {
		return err
	}
	if err := c.flushFile(); err != nil {
		return err
	}
	if err := c.writeMeta(buf, off); err != nil {
		return err
	}
	if err := c.flushFile(); err != nil {
		return err
	}
	var hdr [12]byte
	be.PutUint32(hdr[:], uint32(len(c.snapTable)))
	be.PutUint64(hdr[4:], uint64(off))
	if err := q.writeMeta(hdr[:], offNbSnapshots); err != nil {
		return image.ErrnoError(err)
	}
	if err := c.flushFile(); err != nil {
		return err
	}
	oldOff, oldSize := int64(h.snapshotsOffset), c.snapshotsSize
	h.nbSnapshots, h.snapshotsOffset = uint32(len(c.snapTable)), uint64(off)
	if oldSize > 0 && oldOff > 0 {
		if err := q.rc.release(oldOff, oldSize); err != nil {
			// as qemu: the table is replaced, the old one stays allocated
			c.logf("qcow2_free_clusters failed: Invalid argument")
		}
		for ci := oldOff >> q.clusterBits; ci <= (oldOff+oldSize-1)>>q.clusterBits; ci++ {
			if v, err := q.rc.get(ci); err == nil && v == 0 {
				c.discard(ci)
			}
		}
	}
	return c.flushFile()
}
