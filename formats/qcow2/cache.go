package qcow2

import (
	"container/list"
	"sync"
)

// Metadata caches. qemu's defaults: the L2 cache covers the whole image up
// to 32 MiB of L2 tables (DEFAULT_L2_CACHE_MAX_SIZE), at least two tables
// (MIN_L2_CACHE_SIZE); the refcount block cache holds at least four
// blocks (MIN_REFCOUNT_CACHE_SIZE) and a quarter of the L2 cache.
const (
	maxL2CacheBytes    = 32 << 20
	minL2CacheTables   = 2
	minRefcountBlocks  = 4
	refcountCacheRatio = 4
)

// l2CacheTables is the number of L2 tables cached for an image.
func l2CacheTables(size int64, clusterBits, l2Bits uint32) int {
	cs := int64(1) << clusterBits
	span := cs << l2Bits
	need := (size + span - 1) / span
	limit := int64(maxL2CacheBytes) / cs
	n := min(need, limit)
	return int(max(n, minL2CacheTables))
}

// lru is a cache of decoded tables keyed by host offset, safe for
// concurrent use. Values are shared: they are changed only under the
// image's metadata write lock, and readers hold its read lock.
type lru[T any] struct {
	mu    sync.Mutex
	max   int
	items map[int64]*list.Element
	order *list.List // front: most recently used
}

type lruItem[T any] struct {
	key int64
	val T
}

func newLRU[T any](max int) *lru[T] {
	return &lru[T]{max: max, items: map[int64]*list.Element{}, order: list.New()}
}

// get returns the cached value of key, loading it with load on a miss.
// Loads run under the cache lock: a table is read once even when many
// readers miss it together.
func (c *lru[T]) get(key int64, load func() (T, error)) (T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		return el.Value.(*lruItem[T]).val, nil
	}
	v, err := load()
	if err != nil {
		var zero T
		return zero, err
	}
	c.putLocked(key, v)
	return v, nil
}

// peek returns the cached value of key without loading it.
func (c *lru[T]) peek(key int64) (T, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		return el.Value.(*lruItem[T]).val, true
	}
	var zero T
	return zero, false
}

// put stores a value (a table the caller just created or rewrote).
func (c *lru[T]) put(key int64, v T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value.(*lruItem[T]).val = v
		c.order.MoveToFront(el)
		return
	}
	c.putLocked(key, v)
}

func (c *lru[T]) putLocked(key int64, v T) {
	c.items[key] = c.order.PushFront(&lruItem[T]{key: key, val: v})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*lruItem[T]).key)
	}
}

// drop forgets key (a table whose cluster was freed).
func (c *lru[T]) drop(key int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.Remove(el)
		delete(c.items, key)
	}
}

// clear forgets everything.
func (c *lru[T]) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.items = map[int64]*list.Element{}
	c.order.Init()
}
