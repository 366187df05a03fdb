package convert

import (
	"context"
	"sync"

	"qimg/internal/bigbuf"
)

// buffer is one chunk of memory from the pool, allocated on first use and
// kept for the next job, so that jobs that never read (zeroes, offloaded
// copies) cost nothing.
type buffer struct {
	pool *pool
	data []byte
	out  []byte // compressed clusters of the job (-c)
	cmp  []byte // the backing file's bytes, when data is compared with it
}

// bytes returns the first n bytes of the buffer's data, allocating it.
func (b *buffer) bytes(n, size int64) []byte {
	if int64(cap(b.data)) < size {
		b.data = b.pool.alloc(size)
	}
	return b.data[:n]
}

// compareBytes returns the first n bytes of the buffer for the backing
// file's bytes, allocating it.
func (b *buffer) compareBytes(n, size int64) []byte {
	if int64(cap(b.cmp)) < size {
		b.cmp = b.pool.alloc(size)
	}
	return b.cmp[:n]
}

// pool hands out a fixed number of buffers: the producer takes one per
// data job before it dispatches the job, in job order, so that a job the
// in-order writer waits for always holds its buffer and memory stays flat.
// The buffer returned last is handed out first: a copy that needs few at
// a time allocates (and faults in) only those few.
type pool struct {
	tokens chan struct{} // one per buffer not handed out
	mu     sync.Mutex
	free   []*buffer
	allocs [][]byte // every buffer's memory, for release
}

func newPool(count int) *pool {
	p := &pool{tokens: make(chan struct{}, count)}
	for range count {
		p.tokens <- struct{}{}
	}
	return p
}

func (p *pool) get(ctx context.Context) (*buffer, error) {
	select {
	case <-p.tokens:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b, nil
	}
	return &buffer{pool: p}, nil
}

// alloc is size bytes aligned for O_DIRECT (-t none), outside the heap
// (see bigbuf) until release.
func (p *pool) alloc(size int64) []byte {
	b := bigbuf.Alloc(int(size))
	p.mu.Lock()
	p.allocs = append(p.allocs, b)
	p.mu.Unlock()
	return b
}

// release gives back the memory of every buffer, once the copy is over
// and nothing refers to it.
func (p *pool) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.allocs {
		bigbuf.Free(b)
	}
	p.allocs, p.free = nil, nil
}

func (p *pool) put(b *buffer) {
	if b == nil {
		return
	}
	p.mu.Lock()
	p.free = append(p.free, b)
	p.mu.Unlock()
	p.tokens <- struct{}{}
}
