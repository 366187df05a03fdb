package image

import (
	"encoding/binary"
	"math"
	"sync"
)

// TableCache keeps tables of 64-bit entries that a format reads from its
// file (L2 tables, or pieces of them), keyed by file offset. It holds at
// most limit tables and forgets them all at once when full: bounded, and
// simple enough for the drivers that read far more than they write.
type TableCache struct {
	mu     sync.Mutex
	order  binary.ByteOrder
	limit  int
	miss   Event // raised on the file before a table is read
	tables map[uint64][]uint64
}

// NewTableCache returns an empty cache of tables stored in order; each
// read of a table raises miss (qemu's l2_load) on the file first.
func NewTableCache(order binary.ByteOrder, limit int, miss Event) *TableCache {
	return &TableCache{order: order, limit: limit, miss: miss, tables: map[uint64][]uint64{}}
}

// Get returns the n entries at off in file, reading them on a miss
// (bytes past the end of the file read as zeroes). The caller must not
// change the table it gets; SetEntry does.
func (c *TableCache) Get(file *Node, off uint64, n int64) ([]uint64, error) {
	c.mu.Lock()
	t, ok := c.tables[off]
	c.mu.Unlock()
	if ok {
		return t, nil
	}
	buf := make([]byte, n*8)
	file.Event(c.miss)
	// an offset past int64 lies past the end of the file: zeroes
	if err := file.ReadPadded(buf, int64(min(off, math.MaxInt64/2))); err != nil {
		return nil, err
	}
	t = c.decode(buf)
	c.store(off, t)
	return t, nil
}

// Put caches the table just written at off from its bytes, as qemu keeps
// a new table in its cache (the next access loads nothing).
func (c *TableCache) Put(off uint64, b []byte) { c.store(off, c.decode(b)) }

func (c *TableCache) decode(b []byte) []uint64 {
	t := make([]uint64, len(b)/8)
	for i := range t {
		t[i] = c.order.Uint64(b[i*8:])
	}
	return t
}

func (c *TableCache) store(off uint64, t []uint64) {
	c.mu.Lock()
	if len(c.tables) >= c.limit {
		clear(c.tables)
	}
	c.tables[off] = t
	c.mu.Unlock()
}

// SetEntry changes entry idx of the cached table at off, if it is cached,
// after the caller wrote the entry to the file.
func (c *TableCache) SetEntry(off uint64, idx int64, entry uint64) {
	c.mu.Lock()
	if t, ok := c.tables[off]; ok && idx >= 0 && idx < int64(len(t)) {
		t[idx] = entry
	}
	c.mu.Unlock()
}

// Drop forgets the cached tables that start in [off, off+length).
func (c *TableCache) Drop(off, length uint64) {
	c.mu.Lock()
	for start := range c.tables {
		if start >= off && start-off < length {
			delete(c.tables, start)
		}
	}
	c.mu.Unlock()
}
