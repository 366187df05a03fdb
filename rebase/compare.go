package rebase

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"qimg/convert"
	"qimg/image"
)

// window is the largest range one worker compares at a time (rounded up
// to whole clusters of the image, so that no two workers write one).
const window = 2 << 20

// maxQuery bounds one block status request.
const maxQuery = 1 << 30

// comparer copies into top the ranges it does not allocate where the old
// backing chain and the new one differ.
type comparer struct {
	ctx      context.Context
	top      *image.Node
	old, new *image.Node // either may be nil: no backing file, zeroes
	workers  int
	progress func(done, total int64)

	size    int64
	window  int64
	grain   int64 // the image's cluster: the unit compared and copied
	oldSize int64
	newSize int64
	pool    sync.Pool

	mu   sync.Mutex
	done int64
}

// span is a range of the image it does not allocate.
type span struct{ off, n int64 }

type job struct {
	off, n int64
	spans  []span
	steps  int64 // qemu-img's progress steps that end in the job's window
}

// progressStep is qemu-img rebase's buffer (IO_BUF_SIZE): its loop goes
// through the image in steps of at most this many bytes.
const progressStep = 2 << 20

// qemuLoop replays qemu-img rebase's loop, which reports its progress:
// it walks runs of one allocation state in steps of at most progressStep
// bytes, cuts a step through an unallocated run at the ends of the old
// and new backing files, and counts one progress step for each step
// through an unallocated run.
type qemuLoop struct {
	size, oldSize, newSize int64
	pos, runEnd            int64
	allocated              bool
	open                   bool // the run may continue: its status answer was cut short
}

// run starts the run [off, end), or extends the current one when that was
// cut short by a status query and has the same state; cut says the new
// answer was cut short too. It returns the progress steps that end the
// previous run, held back while it might have continued.
func (l *qemuLoop) run(off, end int64, allocated, cut bool) int64 {
	if l.open && off == l.runEnd && allocated == l.allocated {
		l.runEnd, l.open = end, cut
		return 0
	}
	l.open = false
	k := l.stepsUpTo(l.runEnd)
	l.pos, l.runEnd, l.allocated, l.open = off, end, allocated, cut
	return k
}

// stepsUpTo advances through the steps of the run that end at or before
// limit and returns how many of them are progress steps.
func (l *qemuLoop) stepsUpTo(limit int64) int64 {
	var k int64
	for l.pos < l.runEnd {
		n := min(progressStep, l.size-l.pos, l.runEnd-l.pos)
		if !l.allocated {
			for _, b := range []int64{l.oldSize, l.newSize} {
				if l.pos < b && l.pos+n > b {
					n = b - l.pos
				}
			}
		}
		if l.pos+n > limit || l.open && l.pos+n == l.runEnd && n < progressStep {
			break
		}
		if !l.allocated {
			k++
		}
		l.pos += n
	}
	return k
}

// progressTotal is qemu-img rebase's divisor: each progress step adds
// 100% divided by it.
func progressTotal(size int64) int64 {
	if size == 0 {
		return 0
	}
	return size / min(size, progressStep)
}

func (c *comparer) run() error {
	c.size = c.top.Size()
	c.grain = 64 << 10
	if info, err := image.CollectInfo(c.top); err == nil && info.ClusterSize > 0 {
		c.grain = info.ClusterSize
	}
	c.window = (max(window, c.grain) + c.grain - 1) / c.grain * c.grain
	if c.old != nil {
		c.oldSize = c.old.Size()
	}
	if c.new != nil {
		c.newSize = c.new.Size()
	}
	c.pool.New = func() any { b := make([]byte, 2*c.window); return &b }
	if c.progress != nil {
		c.progress(0, progressTotal(c.size))
	}
	return convert.Pipeline(c.ctx, c.workers,
		c.produce,
		func(ctx context.Context, j *job) error {
			if err := c.execute(ctx, j); err != nil {
				return err
			}
			c.report(j.steps)
			return nil
		})
}

// report counts a job's progress steps: each is the same fraction, so
// the order in which jobs finish does not change the values printed.
func (c *comparer) report(steps int64) {
	if c.progress == nil || steps == 0 {
		return
	}
	c.mu.Lock()
	c.done += steps
	c.progress(c.done, progressTotal(c.size))
	c.mu.Unlock()
}

// produce cuts the ranges the image does not allocate into windows.
func (c *comparer) produce(ctx context.Context, jobs chan<- *job) error {
	var cur *job
	send := func() error {
		if cur == nil {
			return nil
		}
		j := cur
		cur = nil
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	loop := &qemuLoop{size: c.size, oldSize: c.oldSize, newSize: c.newSize}
	for off := int64(0); off < c.size; {
		q := min(c.size-off, maxQuery)
		e, err := c.top.BlockStatus(off, q)
		if err != nil {
			return fmt.Errorf("error while reading block status at offset %d: %w", off, err)
		}
		end := off + e.Length
		if k := loop.run(off, end, e.Allocated, e.Length == q && end < c.size); cur != nil {
			cur.steps += k
		}
		for pos := off; pos < end; {
			w := pos / c.window * c.window
			wEnd := min(w+c.window, c.size)
			if cur != nil && cur.off != w {
				if err := send(); err != nil {
					return err
				}
			}
			if cur == nil {
				cur = &job{off: w, n: wEnd - w}
			}
			k := min(end, wEnd) - pos
			cur.steps += loop.stepsUpTo(pos + k)
			if !e.Allocated {
				cur.spans = append(cur.spans, span{pos, k})
			}
			pos += k
		}
		off = end
	}
	return send()
}

// source is what one chain shows over a range: zeroes, or the bytes of
// one image (deciding, the image of the chain that holds them).
type source struct {
	n        int64
	zero     bool
	deciding *image.Node
}

// look asks one backing chain about [off, off+n).
func look(b *image.Node, size, off, n int64) (source, error) {
	if b == nil || off >= size {
		return source{n: n, zero: true}, nil
	}
	e, err := b.BlockStatusChain(off, min(n, size-off))
	if err != nil {
		return source{}, err
	}
	s := source{n: e.Length, zero: e.Zero}
	if !e.Zero {
		if chain := b.Chain(); e.Depth < len(chain) {
			s.deciding = chain[e.Depth]
		}
	}
	return s, nil
}

// sameImage reports whether two format nodes read the same file.
func sameImage(a, b *image.Node) bool {
	if a == nil || b == nil {
		return false
	}
	if a == b {
		return true
	}
	fa, fb := a.File(), b.File()
	return a.Format == b.Format && fa != nil && fa == fb
}

// execute compares a window's spans and copies the clusters that differ.
func (c *comparer) execute(ctx context.Context, j *job) error {
	var bp *[]byte
	defer func() {
		if bp != nil {
			c.pool.Put(bp)
		}
	}()
	for _, s := range j.spans {
		for off, end := s.off, s.off+s.n; off < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			o, err := look(c.old, c.oldSize, off, end-off)
			if err != nil {
				return fmt.Errorf("error while reading block status of the old backing file at offset %d: %w", off, err)
			}
			n, err := look(c.new, c.newSize, off, o.n)
			if err != nil {
				return fmt.Errorf("error while reading block status of the new backing file at offset %d: %w", off, err)
			}
			k := min(o.n, n.n)
			if o.zero && n.zero || sameImage(o.deciding, n.deciding) {
				off += k // the same bytes in both chains
				continue
			}
			if bp == nil {
				bp = c.pool.Get().(*[]byte)
			}
			if err := c.copyDiffering(*bp, off, k, o.zero, n.zero); err != nil {
				return err
			}
			off += k
		}
	}
	return nil
}

// copyDiffering reads [off, off+n) from both chains and writes the grains
// that differ, as the old chain shows them, into the image.
func (c *comparer) copyDiffering(buf []byte, off, n int64, oldZero, newZero bool) error {
	ob, nb := buf[:n], buf[c.window:c.window+n]
	if oldZero {
		clear(ob)
	} else if err := c.old.ReadPadded(ob, off); err != nil {
		return fmt.Errorf("error while reading the old backing file at offset %d: %w", off, err)
	}
	if newZero {
		clear(nb)
	} else if err := c.new.ReadPadded(nb, off); err != nil {
		return fmt.Errorf("error while reading the new backing file at offset %d: %w", off, err)
	}
	runStart, inRun := int64(0), false
	flush := func(at int64) error {
		if !inRun {
			return nil
		}
		inRun = false
		return c.write(ob[runStart-off:at-off], runStart)
	}
	for g := off; g < off+n; {
		gEnd := min((g/c.grain+1)*c.grain, off+n)
		if bytes.Equal(ob[g-off:gEnd-off], nb[g-off:gEnd-off]) {
			if err := flush(g); err != nil {
				return err
			}
		} else if !inRun {
			runStart, inRun = g, true
		}
		g = gEnd
	}
	return flush(off + n)
}

// write stores the old chain's bytes p at off into the image: zeroes as
// zeroes, whole clusters at a time.
func (c *comparer) write(p []byte, off int64) error {
	for len(p) > 0 {
		gEnd := min((off/c.grain+1)*c.grain, off+int64(len(p)))
		k := gEnd - off
		zero := image.IsZero(p[:k])
		// a run of grains of one kind is written at once
		for gEnd < off+int64(len(p)) {
			nEnd := min(gEnd+c.grain, off+int64(len(p)))
			if image.IsZero(p[gEnd-off:nEnd-off]) != zero {
				break
			}
			gEnd = nEnd
		}
		k = gEnd - off
		var err error
		if zero {
			err = c.top.WriteZeroes(off, k, false)
		} else {
			_, err = c.top.WriteAt(p[:k], off)
		}
		if err != nil {
			return fmt.Errorf("error while writing at byte %d: %w", off, err)
		}
		p = p[k:]
		off += k
	}
	return nil
}
