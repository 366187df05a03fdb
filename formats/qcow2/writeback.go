package qcow2

// Write-back of L2 and L1 entries. Entries changed by writes stay in
// memory (the tables are pinned in dirtyL2, so readers see them) and are
// written by flushMetaLocked, which orders the file as the write order
// needs it to survive a crash of the process or of the machine:
//
//  1. write the refcounts held back by allocDeferred, then sync: the
//     refcounts of every cluster the new entries point at, and the data
//     and new tables in those clusters, are on disk;
//  2. write the changed L2 entries, then the changed L1 entries;
//  3. sync, then drop the references of the clusters that the new entries
//     replaced (a cluster is reused only once nothing on disk points at it).
//
// Flush (and Close) runs it; so does a write once too much is pending.

import (
	"errors"

	"qimg/image"
)

// maxDirtyBytes bounds the L2 tables pinned in memory by pending entries.
const maxDirtyBytes = 8 << 20

// maxPending bounds the pending L1 entries and releases.
const maxPending = 1 << 16

func (q *Image) markL2Dirty(t *l2Table, i, j int) error {
	if q.dirtyL2 == nil {
		q.dirtyL2 = map[int64]*l2Table{}
	}
	if t.dirtyLo >= t.dirtyHi {
		t.dirtyLo, t.dirtyHi = i, j
	} else {
		t.dirtyLo, t.dirtyHi = min(t.dirtyLo, i), max(t.dirtyHi, j)
	}
	q.dirtyL2[t.offset] = t
	return q.flushIfFull()
}

func (q *Image) markL1Dirty(i int64) error {
	if q.dirtyL1 == nil {
		q.dirtyL1 = map[int64]struct{}{}
	}
	q.dirtyL1[i] = struct{}{}
	return q.flushIfFull()
}

// releaseLater drops the references to [off, off+length) after the next
// write of the tables (at once while an image is being created).
func (q *Image) releaseLater(off, length int64) error {
	if q.creating {
		return q.rc.release(off, length)
	}
	q.pendingFree = append(q.pendingFree, [2]int64{off, length})
	return q.flushIfFull()
}

func (q *Image) flushIfFull() error {
	if int64(len(q.dirtyL2))*q.clusterSize > maxDirtyBytes && len(q.dirtyL2) > 4 ||
		q.rc != nil && int64(len(q.rc.pending))*q.clusterSize > maxDirtyBytes ||
		len(q.dirtyL1) > maxPending || len(q.pendingFree) > maxPending {
		return q.flushMetaLocked()
	}
	return nil
}

// flushMetaLocked writes the pending entries and releases in the order
// above. The caller holds the metadata lock for writing.
func (q *Image) flushMetaLocked() error {
	if len(q.dirtyL2) == 0 && len(q.dirtyL1) == 0 && len(q.pendingFree) == 0 &&
		(q.rc == nil || len(q.rc.pending) == 0) {
		return nil
	}
	if q.rc != nil {
		if err := q.rc.flushPending(); err != nil {
			return image.IOError("Failed to flush the refcount block cache", err)
		}
	}
	if err := q.syncFiles(); err != nil {
		return image.IOError("Failed to flush the refcount block cache", err)
	}
	for off, t := range q.dirtyL2 {
		if t.dirtyLo < t.dirtyHi {
			if err := q.writeL2Now(t, t.dirtyLo, t.dirtyHi); err != nil {
				return image.IOError("Failed to flush the L2 table cache", err)
			}
		}
		t.dirtyLo, t.dirtyHi = 0, 0
		q.l2cache.put(off, t)
		delete(q.dirtyL2, off)
	}
	for i := range q.dirtyL1 {
		if i < int64(len(q.l1)) {
			if err := q.writeL1Now(i); err != nil {
				return image.IOError("Failed to flush the L2 table cache", err)
			}
		}
		delete(q.dirtyL1, i)
	}
	if len(q.pendingFree) == 0 {
		return nil
	}
	if err := q.file.Flush(); err != nil {
		return err
	}
	pending := q.pendingFree
	q.pendingFree = nil
	for i, r := range pending {
		if err := q.rc.release(r[0], r[1]); err != nil {
			q.keepPendingFree(pending[i:], err)
			return err
		}
		q.l2cache.drop(r[0])
	}
	return nil
}

// keepPendingFree keeps the releases a failed flush did not make (the
// first one failed with err) for the next flush, so that a passing fault
// leaks nothing; a release that failed half-way is dropped (its clusters
// leak) as trying it again could free some clusters twice.
func (q *Image) keepPendingFree(left [][2]int64, err error) {
	var h halfDone
	if errors.As(err, &h) {
		left = left[1:]
	}
	q.pendingFree = append(append([][2]int64(nil), left...), q.pendingFree...)
}

// barrier makes what was written so far durable before what follows is
// written; an image being created needs none (its header comes last).
func (q *Image) barrier() error {
	if q.creating {
		return nil
	}
	return q.file.Flush()
}

// syncFiles makes the data file and the image file durable.
func (q *Image) syncFiles() error {
	if q.data != nil {
		if err := q.data.Flush(); err != nil {
			return err
		}
	}
	return q.file.Flush()
}

// Flush writes the pending metadata; the node then syncs the file.
func (q *Image) Flush() error {
	q.meta.Lock()
	defer q.meta.Unlock()
	if q.rc == nil || q.corrupt {
		return nil
	}
	return q.flushMetaLocked()
}

// In-flight allocations: clusters whose new host clusters are being
// written without the metadata lock; their entries change once the data
// is written. Anything else that would change them waits.

// markInflight records guest clusters [c0, c0+k) as in flight; the caller
// holds the metadata lock.
func (q *Image) markInflight(c0, k int64) chan struct{} {
	if q.inflight == nil {
		q.inflight = map[int64]chan struct{}{}
	}
	ch := make(chan struct{})
	for c := c0; c < c0+k; c++ {
		q.inflight[c] = ch
	}
	return ch
}

func (q *Image) clearInflight(c0, k int64, ch chan struct{}) {
	for c := c0; c < c0+k; c++ {
		delete(q.inflight, c)
	}
	close(ch)
}

// waitInflight waits, with the metadata lock dropped, until no cluster of
// [c0, c1) is in flight. It reports whether it waited: the caller must
// then read the metadata again.
func (q *Image) waitInflight(c0, c1 int64) bool {
	waited := false
	for {
		var ch chan struct{}
		if len(q.inflight) > 0 {
			for c := c0; c < c1; c++ {
				if x, ok := q.inflight[c]; ok {
					ch = x
					break
				}
			}
		}
		if ch == nil {
			return waited
		}
		waited = true
		q.meta.Unlock()
		<-ch
		q.meta.Lock()
	}
}
