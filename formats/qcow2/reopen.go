package qcow2

// Reopen switches an open image between read-only and read/write (dynamic
// read-only: commit and rebase write into a backing file only while they
// need to). The node has already reopened the image file in the new mode
// and, when going read-only, flushed the image. Opening for writing loads
// the refcounts as Open does for a writable image; going back drops them.
func (q *Image) Reopen(writable bool) error {
	if writable == q.writable {
		return nil
	}
	if writable {
		q.writable = true
		// openWritable may run a repair, which takes the metadata lock
		// itself; nothing else uses the image while it is reopened.
		if err := q.openWritable(); err != nil {
			q.meta.Lock()
			q.writable, q.rc, q.metaClusters = false, nil, nil
			q.meta.Unlock()
			return err
		}
		return nil
	}
	if q.rc != nil && !q.corrupt {
		if err := q.flushAndFinishBitmaps(); err != nil {
			return err
		}
	}
	q.meta.Lock()
	defer q.meta.Unlock()
	if q.rc != nil && !q.corrupt {
		if len(q.dirtyL2) > 0 || len(q.dirtyL1) > 0 || len(q.pendingFree) > 0 {
			return errNotFlushed
		}
	}
	q.writable, q.rc, q.metaClusters = false, nil, nil
	return nil
}

type reopenError string

func (e reopenError) Error() string { return string(e) }

// errNotFlushed: metadata is still pending (the node flushes before it
// reopens an image read-only, so this does not happen through it).
const errNotFlushed = reopenError("qcow2: reopening read-only with metadata not yet written")
