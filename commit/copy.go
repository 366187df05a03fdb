package commit

import (
	"context"
	"fmt"
	"sync"

	"qimg/convert"
	"qimg/image"
)

// kind is what the base must do with a range of the top's view.
type kind uint8

const (
	kSkip kind = iota // no layer above the base decides it: the base's content shows
	kData             // a layer above holds data: copied
	kZero             // a layer above reads as zeroes here: the base must too
)

type piece struct {
	off, n int64
	kind   kind
}

// job is a window of the image (whole base clusters, so that no two jobs
// write one cluster) or, without data, a run of windows.
type job struct {
	off, n int64
	pieces []piece
	data   bool
}

// chunk is the largest window of data one worker copies at a time.
const chunk = 2 << 20

// maxQuery bounds one block status request.
const maxQuery = 1 << 30

// maxBulkPieces bounds the pieces of a job without data.
const maxBulkPieces = 256

type copier struct {
	ctx      context.Context
	above    []*image.Node // the top first, down to the layer above the base
	base     *image.Node
	baseSize int64 // before the base grew
	rate     int64
	workers  int
	progress func(done, total int64)

	window int64
	size   int64
	limit  *convert.RateLimiter
	pool   sync.Pool

	mu   sync.Mutex
	done int64
}

// status classifies the run at off (at most n bytes) from the layers above
// the base, top first.
func (c *copier) status(off, n int64) (piece, error) {
	n = min(n, maxQuery)
	for _, l := range c.above {
		if off >= l.Size() {
			// the layer above reads beyond this one's end as zeroes
			return piece{off, n, kZero}, nil
		}
		n = min(n, l.Size()-off)
		e, err := l.BlockStatus(off, n)
		if err != nil {
			return piece{}, fmt.Errorf("error while reading block status at offset %d: %w", off, err)
		}
		if e.Allocated {
			if e.Zero {
				return piece{off, e.Length, kZero}, nil
			}
			return piece{off, e.Length, kData}, nil
		}
		n = e.Length
	}
	if off >= c.baseSize {
		return piece{off, n, kZero}, nil // grown: must read as zeroes
	}
	return piece{off, min(n, c.baseSize-off), kSkip}, nil
}

func (c *copier) run() error {
	c.size = c.above[0].Size()
	c.window = chunk
	if info, err := image.CollectInfo(c.base); err == nil && info.ClusterSize > 0 {
		cs := info.ClusterSize
		c.window = (max(c.window, cs) + cs - 1) / cs * cs
	}
	if c.workers <= 0 {
		c.workers = DefaultWorkers
	}
	c.limit = convert.NewRateLimiter(c.rate)
	c.pool.New = func() any { b := make([]byte, c.window); return &b }
	if c.progress != nil {
		c.progress(0, c.size)
	}
	return convert.Pipeline(c.ctx, c.workers,
		c.produce,
		c.execute)
}

// produce walks the top's view window by window.
func (c *copier) produce(ctx context.Context, jobs chan<- *job) error {
	var ext piece // the rest of the last status answer
	var bulk *job
	send := func(j *job) error {
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	addBulk := func(p piece) error {
		if bulk == nil {
			bulk = &job{off: p.off}
		}
		if k := len(bulk.pieces); k > 0 && bulk.pieces[k-1].kind == p.kind {
			bulk.pieces[k-1].n += p.n
		} else {
			bulk.pieces = append(bulk.pieces, p)
		}
		bulk.n += p.n
		if len(bulk.pieces) >= maxBulkPieces {
			j := bulk
			bulk = nil
			return send(j)
		}
		return nil
	}
	next := func(pos int64) (piece, error) {
		if ext.n == 0 {
			p, err := c.status(pos, c.size-pos)
			if err != nil {
				return piece{}, err
			}
			ext = p
		}
		return ext, nil
	}
	take := func(n int64) piece {
		p := piece{ext.off, n, ext.kind}
		ext.off += n
		ext.n -= n
		return p
	}
	for pos := int64(0); pos < c.size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := next(pos)
		if err != nil {
			return err
		}
		wEnd := min((pos/c.window+1)*c.window, c.size)
		if p.kind != kData && p.off+p.n > wEnd {
			// whole windows without data at once
			end := (p.off + p.n) / c.window * c.window
			if p.off+p.n >= c.size {
				end = c.size
			}
			if end > pos {
				if err := addBulk(take(end - pos)); err != nil {
					return err
				}
				pos = end
				continue
			}
		}
		w := &job{off: pos}
		for pos < wEnd {
			p, err := next(pos)
			if err != nil {
				return err
			}
			q := take(min(p.n, wEnd-pos))
			w.pieces = append(w.pieces, q)
			w.n += q.n
			w.data = w.data || q.kind == kData
			pos += q.n
		}
		if !w.data {
			for _, q := range w.pieces {
				if err := addBulk(q); err != nil {
					return err
				}
			}
			continue
		}
		if bulk != nil {
			j := bulk
			bulk = nil
			if err := send(j); err != nil {
				return err
			}
		}
		if err := send(w); err != nil {
			return err
		}
	}
	if bulk != nil {
		return send(bulk)
	}
	return nil
}

// execute copies a job's data and zeroes into the base.
func (c *copier) execute(ctx context.Context, j *job) error {
	var bp *[]byte
	defer func() {
		if bp != nil {
			c.pool.Put(bp)
		}
	}()
	top := c.above[0]
	for i := 0; i < len(j.pieces); i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := j.pieces[i]
		switch p.kind {
		case kData:
			// neighbouring data pieces are read at once
			end := p.off + p.n
			for i+1 < len(j.pieces) && j.pieces[i+1].kind == kData {
				i++
				end = j.pieces[i].off + j.pieces[i].n
			}
			if bp == nil {
				bp = c.pool.Get().(*[]byte)
			}
			buf := (*bp)[:end-p.off]
			if _, err := top.ReadAt(buf, p.off); err != nil {
				return fmt.Errorf("error while reading at byte %d: %w", p.off, err)
			}
			if err := c.limit.Wait(ctx, int64(len(buf))); err != nil {
				return err
			}
			if _, err := c.base.WriteAt(buf, p.off); err != nil {
				return fmt.Errorf("error while writing at byte %d: %w", p.off, err)
			}
		case kZero:
			if err := c.zero(p.off, p.n); err != nil {
				return fmt.Errorf("error while writing at byte %d: %w", p.off, err)
			}
		}
	}
	if c.progress != nil {
		c.mu.Lock()
		c.done += j.n
		c.progress(c.done, c.size)
		c.mu.Unlock()
	}
	return nil
}

// zero makes a range of the base read as zeroes where it does not already.
func (c *copier) zero(off, n int64) error {
	for end := off + n; off < end; {
		e, err := c.base.BlockStatusChain(off, end-off)
		if err != nil {
			return err
		}
		if !e.Zero {
			if err := c.base.WriteZeroes(off, e.Length, true); err != nil {
				return err
			}
		}
		off += e.Length
	}
	return nil
}
