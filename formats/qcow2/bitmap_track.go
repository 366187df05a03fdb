package qcow2

import (
	"fmt"
	"sync"

	"qimg/image"
)

// Dirty tracking: what an image opened read/write owes its persistent
// bitmaps, as qemu does it. The write path calls:
//
//   - startBitmapTracking when the image is opened read/write (before the
//     first guest write): the enabled bitmaps are loaded, and every
//     consistent bitmap is marked in-use on disk (one directory switch);
//   - markBitmapsDirty with every guest range a write, a zero write, a
//     discard or a compressed write changes, before the write is
//     acknowledged;
//   - finishBitmapTracking on a clean close (or a reopen read-only): the
//     enabled bitmaps are stored with their new bits and every bitmap that
//     was consistent at open loses its in-use flag, in one directory
//     switch. A process that dies before leaves the bitmaps in-use, which
//     info and check report and only --remove accepts.
//
// The tracker lives beside the Image in a map keyed by the Image.

type bitmapTracker struct {
	mu      sync.Mutex
	set     []image.BitmapUpdate // the set to store at the end
	enabled []*image.DirtyBitmap // the bits writes set
	// marked says the open marked bitmaps in-use, which the close undoes;
	// an image whose bitmaps were all in use already is left as it is
	marked bool
}

var bitmapTrackers sync.Map // *Image → *bitmapTracker

// startBitmapTracking loads the enabled bitmaps and marks the consistent
// ones in-use on disk. An image without bitmaps needs nothing.
func (q *Image) startBitmapTracking() error {
	q.meta.RLock()
	dir, err := q.loadBitmapDir()
	q.meta.RUnlock()
	if err != nil || len(dir) == 0 {
		return err
	}
	t := &bitmapTracker{}
	inUse := make([]image.BitmapUpdate, 0, len(dir))
	for i := range dir {
		e := &dir[i]
		info := image.BitmapInfo{Name: e.name, Granularity: int64(1) << e.granularityBits,
			Enabled: e.flags&bmeFlagAuto != 0, InUse: e.flags&bmeFlagInUse != 0}
		u := image.BitmapUpdate{BitmapInfo: info}
		if !info.InUse && info.Enabled {
			q.meta.RLock()
			d, err := q.loadBitmapData(e)
			q.meta.RUnlock()
			if err != nil {
				return fmt.Errorf("%s: %w", q.filename, err)
			}
			u.Data = d
			t.enabled = append(t.enabled, d)
		}
		t.set = append(t.set, u)
		marked := image.BitmapUpdate{BitmapInfo: info}
		marked.InUse = true
		inUse = append(inUse, marked)
		t.marked = t.marked || !info.InUse
	}
	if t.marked {
		if err := q.StoreBitmaps(inUse); err != nil {
			return err
		}
	}
	bitmapTrackers.Store(q, t)
	return nil
}

// markBitmapsDirty sets the bits of guest bytes [off, off+length) in
// every enabled bitmap.
func (q *Image) markBitmapsDirty(off, length int64) {
	v, ok := bitmapTrackers.Load(q)
	if !ok {
		return
	}
	t := v.(*bitmapTracker)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, d := range t.enabled {
		d.Set(off, length)
	}
}

// finishBitmapTracking stores the bitmaps as writes left them and clears
// the in-use flags set by startBitmapTracking. The caller holds no
// metadata lock.
func (q *Image) finishBitmapTracking() error {
	v, ok := bitmapTrackers.LoadAndDelete(q)
	if !ok {
		return nil
	}
	t := v.(*bitmapTracker)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.marked {
		return nil
	}
	return q.StoreBitmaps(t.set)
}

// trackStoredBitmaps keeps the set a clean close will store in step with
// a set stored while the image is open (convert --bitmaps adds bitmaps to
// a target it has written): bitmaps no longer stored are dropped, new
// ones are kept with their stored content.
func (q *Image) trackStoredBitmaps(stored []image.BitmapUpdate) {
	v, ok := bitmapTrackers.Load(q)
	if !ok {
		return
	}
	t := v.(*bitmapTracker)
	t.mu.Lock()
	defer t.mu.Unlock()
	var set []image.BitmapUpdate
	for _, s := range stored {
		u := image.BitmapUpdate{BitmapInfo: s.BitmapInfo}
		u.InUse = false
		for _, old := range t.set {
			if old.Name == s.Name {
				u = old
				break
			}
		}
		set = append(set, u)
	}
	t.set = set
	t.marked = true
}

// bitmapsForResize readies the tracked bitmaps for a change of the image
// size (qemu's qcow2_truncate_bitmaps_check): a bitmap in use since before
// the open refuses it, and the disabled ones are loaded, since every
// bitmap is stored again at the new size. It returns nil for an image
// without tracked bitmaps. The caller holds the metadata lock.
func (q *Image) bitmapsForResize() (*bitmapTracker, error) {
	v, ok := bitmapTrackers.Load(q)
	if !ok {
		return nil, nil
	}
	t := v.(*bitmapTracker)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, u := range t.set {
		if u.InUse {
			return nil, fmt.Errorf("Bitmap '%s' is inconsistent and cannot be used", u.Name)
		}
	}
	var dir []bitmapDirEntry
	for i := range t.set {
		if t.set[i].Data != nil {
			continue
		}
		if dir == nil {
			var err error
			if dir, err = q.loadBitmapDir(); err != nil {
				return nil, err
			}
		}
		for j := range dir {
			if dir[j].name != t.set[i].Name {
				continue
			}
			d, err := q.loadBitmapData(&dir[j])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", q.filename, err)
			}
			t.set[i].Data = d
		}
	}
	return t, nil
}

// resize gives every tracked bitmap the image's new size: the bits past
// a shrunk end go, a grown end adds clean bits. A clean close stores them.
func (t *bitmapTracker) resize(size int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.set {
		old := t.set[i].Data
		if old == nil {
			continue
		}
		d := image.NewDirtyBitmap(size, old.Granularity())
		old.EachExtent(func(e image.DirtyExtent) error {
			if e.Offset < size {
				d.Set(e.Offset, min(e.Length, size-e.Offset))
			}
			return nil
		})
		t.set[i].Data = d
		for j := range t.enabled {
			if t.enabled[j] == old {
				t.enabled[j] = d
			}
		}
	}
}
