package qcow2

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"qimg/image"
)

// The consistency check (qemu-img check). It follows the order of qemu's
// qcow2_check_refcounts so that the messages, the counts and the repairs
// come out as qemu's do:
//
//  0. read the snapshot table leniently (check_snapshot.go); bitmaps qemu
//     cannot load failed the open already (loadBitmaps);
//  1. count every reference to every host cluster of the image file from
//     the metadata alone (check_count.go, check_l2.go, check_bitmap.go):
//     header, active L1 and its L2 tables and data, snapshot table and
//     each snapshot's L1 and L2, refcount table, crypto header, bitmap
//     directory and tables, refcount blocks;
//  2. compare the counts with the refcounts stored on disk
//     (check_stored.go): a stored refcount above the count is a leak, below
//     it a corruption; a stored refcount of zero for a referenced cluster
//     means the refcount structure itself must be rebuilt;
//  3. repair what the caller allows (repair.go, repair_rebuild.go);
//  4. compare the COPIED flag of every active L1 and L2 entry with the
//     refcount of the cluster it points to (check_copied.go);
//  5. with -r all, write a snapshot table found incomplete anew; with any
//     -r and nothing left wrong, clear the dirty and corrupt bits.
//
// Images are opened for a check as qemu's BDRV_O_CHECK opens them
// (check_open.go): nothing is refused or repaired on open.
//
// Memory is one byte per host cluster of the file (check_count.go), never
// sized from a header field; a clean image is read once.

// maxCheckClusters is qemu's limit on the clusters of a checked file
// (INT_MAX): beyond it the check fails with "File too large".
const maxCheckClusters = math.MaxInt32

// checker holds the state of one check run.
type checker struct {
	q        *Image
	log      *bufio.Writer
	fix      image.CheckFix
	cs       int64
	fileSize int64

	refs    *refCounts
	res     checkCounts
	rebuild bool
	// highest is the last cluster with a stored or counted reference.
	highest int64

	// copied records, per host cluster, whether active L2 entries
	// pointing to it have the COPIED flag set and whether some have it
	// clear; copiedSlow says that the cheap comparison cannot decide and
	// the L2 tables must be read again (check_copied.go).
	copiedSet, copiedClear bitset
	copiedSlow             bool
	// l2Writes counts the L2 entries a repair wrote while counting
	l2Writes int
	// activeSeen (set for an untrusted image, untrusted.go) records the
	// host clusters the active view names; duplicate is the first one
	// named twice, -1 if none
	activeSeen bitset
	duplicate  int64

	stored *storedRefs
	// failed is set when counting could not go on (qemu fails the check
	// there): nothing more is counted or said
	failed error
	// the snapshot table as read once per check (check_snapshot.go), its
	// byte length, and the corruptions found in it
	snapTable       []checkSnapshot
	snapshotsSize   int64
	snapCorruptions int64
	snapReduced     int64
}

// checkCounts are qemu's BdrvCheckResult counters.
type checkCounts struct {
	corruptions, leaks, checkErrors         int64
	corruptionsFixed, leaksFixed            int64
	allocated, fragmented, compressed, used int64
}

// Check implements image.Checker: it checks the refcounts and the COPIED
// flags and repairs what fix allows, as qemu-img check does.
func (q *Image) Check(fix image.CheckFix, log io.Writer) (*image.CheckResult, error) {
	q.meta.Lock()
	defer q.meta.Unlock()
	if fix != 0 && !q.file.Writable() {
		return nil, image.ErrReadOnly
	}
	if q.writable {
		// what the write path holds back goes to the file first: the
		// check reads the metadata from there
		if err := q.flushMetaLocked(); err != nil {
			return nil, err
		}
	}
	if q.corrupt && q.writable {
		// a corruption found while repairing made the image unusable, as
		// qemu makes its node unusable: the check after a repair fails
		return nil, image.Errorf(image.ErrCorrupt, "No medium found")
	}
	w := bufio.NewWriter(log)
	defer w.Flush()
	c := &checker{q: q, log: w, fix: fix, cs: q.clusterSize}
	if err := c.run(); err != nil {
		w.Flush()
		return nil, err
	}
	r := &image.CheckResult{
		CheckErrors:        c.res.checkErrors,
		Corruptions:        c.res.corruptions,
		Leaks:              c.res.leaks,
		CorruptionsFixed:   c.res.corruptionsFixed,
		LeaksFixed:         c.res.leaksFixed,
		ImageEndOffset:     (c.highest + 1) * c.cs,
		TotalClusters:      (q.size&^511 + c.cs - 1) >> q.clusterBits, // whole sectors, as qemu's
		AllocatedClusters:  c.res.allocated,
		FragmentedClusters: c.res.fragmented,
		CompressedClusters: c.res.compressed,
	}
	return r, nil
}

// cHex formats v as C's "%#x" does: "0" for zero, else with "0x".
func cHex(v uint64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}

// errIO is qemu's EIO, as qemu-img check words it.
var errIO = image.Errorf(image.ErrCorrupt, "Input/output error")

// signalCorruption reports metadata found inconsistent, once per image
// (qemu's qcow2_signal_corruption): an image open for writing is marked
// corrupt (its write path then refuses writes) and, as qemu's node becomes
// unusable, the check after the repair fails.
func (c *checker) signalCorruption(format string, args ...any) {
	q := c.q
	if q.corrupt {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if q.writable {
		c.logf("qcow2: Marking image as corrupt: %s; further corruption events will be suppressed", msg)
		q.markCorrupt()
		return
	}
	c.logf("qcow2: Image is corrupt: %s; further non-fatal corruption events will be suppressed", msg)
	q.corrupt = true
}

// progName is the name messages printed as qemu-img's error_report
// lines start with: the name qimg was called by, as the command's own
// errors do.
func progName() string {
	if len(os.Args) > 0 && filepath.Base(os.Args[0]) == "qemu-img" {
		return "qemu-img"
	}
	return "qimg"
}

func (c *checker) logf(format string, args ...any) {
	if c.failed != nil {
		return
	}
	fmt.Fprintf(c.log, format, args...)
	c.log.WriteByte('\n')
}

// run is qemu's qcow2_co_check_locked with qcow2_check_refcounts inlined.
func (c *checker) run() error {
	if err := c.prepare(); err != nil {
		return err
	}
	if err := c.calculate(c.fix&image.FixErrors != 0); err != nil {
		return err
	}
	pre := c.res
	c.compare(0)

	switch {
	case c.rebuild && c.fix&image.FixErrors != 0:
		if err := c.rebuildRefcounts(); err != nil {
			return err
		}
	case c.fix != 0:
		if c.rebuild {
			c.logf("ERROR need to rebuild refcount structures")
			c.res.checkErrors++
			return errIO
		}
		if c.res.leaks != 0 || c.res.corruptions != 0 {
			c.res = pre
			c.compare(c.fix)
			if err := c.flushRepairs(); err != nil {
				return err
			}
		}
	}
	if err := c.checkCopied(); err != nil {
		return err
	}
	if err := c.fixSnapshotTable(); err != nil {
		return err
	}
	if c.fix != 0 && c.res.checkErrors == 0 && c.res.corruptions == 0 {
		if err := c.markClean(); err != nil {
			return err
		}
	}
	return nil
}

// prepare reads what the count needs: the stored refcount table and the
// snapshot table, and sizes the counts by the file.
func (c *checker) prepare() error {
	q := c.q
	c.fileSize = q.file.Size()
	nb := (c.fileSize + c.cs - 1) >> q.clusterBits
	if nb > maxCheckClusters {
		return image.Errorf(image.ErrUnsupported, "File too large")
	}
	stored, err := loadStoredRefs(q)
	if err != nil {
		return err
	}
	c.stored = stored
	stored.c = c
	c.refs = newRefCounts(nb, stored.max)
	c.snapTable, c.snapshotsSize, err = c.readCheckSnapshots()
	return err
}

// calculate counts the references of every structure (qemu's
// calculate_refcounts). fixErrors lets check_refblocks grow a file whose
// refcount blocks lie beyond its end.
func (c *checker) calculate(fixErrors bool) error {
	q := c.q
	h := q.h
	c.inc(0, c.cs) // header and extensions
	c.resetCopied()
	if err := c.countL1(int64(h.l1TableOffset), int64(h.l1Size), true); err != nil {
		return err
	}
	if c.failed != nil {
		return c.failed
	}
	snaps := c.snapTable
	if q.cls.dataFile && len(snaps) > 0 {
		c.logf("ERROR %d snapshots in image with data file", len(snaps))
		c.res.corruptions++
	}
	for _, sn := range snaps {
		if sn.l1TableOffset%uint64(c.cs) != 0 {
			c.logf("ERROR snapshot %s (%s) l1_offset=%s: L1 table is not cluster aligned; snapshot table entry corrupted", sn.id, sn.name, cHex(sn.l1TableOffset))
			c.res.corruptions++
			continue
		}
		if uint64(sn.l1Size)*8 > maxL1Bytes {
			c.logf("ERROR snapshot %s (%s) l1_size=%s: L1 table is too large; snapshot table entry corrupted", sn.id, sn.name, cHex(uint64(sn.l1Size)))
			c.res.corruptions++
			continue
		}
		if err := c.countL1(int64(sn.l1TableOffset), int64(sn.l1Size), false); err != nil {
			return err
		}
		if c.failed != nil {
			return c.failed
		}
	}
	c.inc(int64(h.snapshotsOffset), c.snapshotsSize)
	c.inc(c.stored.tableOffset, int64(len(c.stored.table))*8)
	if cr := h.crypto; cr != nil && cr.length != 0 {
		c.inc(int64(cr.offset), int64(cr.length&math.MaxInt64))
	}
	if c.failed != nil {
		return c.failed
	}
	if err := c.countBitmaps(); err != nil {
		return err
	}
	if c.failed != nil {
		return c.failed
	}
	return c.countRefblocks(fixErrors)
}

// repairDirty rebuilds the refcounts of an image left dirty (lazy
// refcounts) and clears the dirty bit, as qemu does when it opens such an
// image read/write.
func (q *Image) repairDirty() error {
	res, err := q.Check(image.FixLeaks|image.FixErrors, io.Discard)
	if err != nil {
		return fmt.Errorf("Could not repair dirty image: %w", err)
	}
	if res.CheckErrors > 0 || res.Corruptions > 0 {
		return image.Errorf(image.ErrCorrupt, "Could not repair dirty image: Input/output error")
	}
	return nil
}
