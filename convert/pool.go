package convert

import (
	"context"
	"unsafe"
)

// bufAlign aligns buffers for O_DIRECT targets and sources (-t none).
const bufAlign = 4096

// buffer is one chunk of memory from the pool, allocated on first use and
// kept for the next job, so that jobs that never read (zeroes, offloaded
// copies) cost nothing.
type buffer struct {
	data []byte
	out  []byte // compressed clusters of the job (-c)
	cmp  []byte // the backing file's bytes, when data is compared with it
}

// bytes returns the first n bytes of the buffer's data, allocating it.
func (b *buffer) bytes(n, size int64) []byte {
	if int64(cap(b.data)) < size {
		b.data = alignedBytes(size)
	}
	return b.data[:n]
}

func alignedBytes(size int64) []byte {
	raw := make([]byte, size+bufAlign)
	off := int(uintptr(unsafe.Pointer(&raw[0])) & (bufAlign - 1))
	if off != 0 {
		off = bufAlign - off
	}
	return raw[off : off+int(size) : off+int(size)]
}

// pool hands out a fixed number of buffers: the producer takes one per
// data job before it dispatches the job, in job order, so that a job the
// in-order writer waits for always holds its buffer and memory stays flat.
type pool struct {
	ch chan *buffer
}

func newPool(count int) *pool {
	p := &pool{ch: make(chan *buffer, count)}
	for range count {
		p.ch <- &buffer{}
	}
	return p
}

func (p *pool) get(ctx context.Context) (*buffer, error) {
	select {
	case b := <-p.ch:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pool) put(b *buffer) {
	if b != nil {
		p.ch <- b
	}
}
