package bigbuf

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the size of a transparent huge page on amd64 and arm64
// (with 4 KiB base pages).
const hugePage = 2 << 20

// mapped are the buffers alloc mapped, by address: free unmaps only
// those.
var (
	mappedMu sync.Mutex
	mapped   = map[uintptr][]byte{}
)

// alloc maps anonymous memory aligned to hugePage, for a buffer at least
// that long, and asks for huge pages (transparent_hugepage "madvise" or
// "always"; elsewhere the advice does nothing). A failed map falls back
// to the Go heap.
func alloc(size int) []byte {
	if size < hugePage {
		return heapAlloc(size)
	}
	span := size + hugePage
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(span), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return heapAlloc(size)
	}
	head := 0
	if r := int(uintptr(p) % hugePage); r != 0 {
		head = hugePage - r
	}
	// the map's head and tail around the buffer go back at once
	if head > 0 {
		unix.MunmapPtr(p, uintptr(head))
	}
	if tail := span - head - size; tail > 0 {
		unix.MunmapPtr(unsafe.Add(p, head+size), uintptr(tail))
	}
	b := unsafe.Slice((*byte)(unsafe.Add(p, head)), size)
	unix.Madvise(b, unix.MADV_HUGEPAGE)
	mappedMu.Lock()
	mapped[uintptr(unsafe.Pointer(&b[0]))] = b
	mappedMu.Unlock()
	return b
}

// free unmaps a mapped buffer; a heap one is left to the collector.
func free(b []byte) {
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	mappedMu.Lock()
	m, ok := mapped[addr]
	delete(mapped, addr)
	mappedMu.Unlock()
	if ok {
		unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(m)), uintptr(len(m)))
	}
}
