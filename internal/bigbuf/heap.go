package bigbuf

import "unsafe"

// heapAlloc is an aligned buffer from the Go heap.
func heapAlloc(size int) []byte {
	raw := make([]byte, size+Align)
	off := int(uintptr(unsafe.Pointer(&raw[0])) & (Align - 1))
	if off != 0 {
		off = Align - off
	}
	return raw[off : off+size : off+size]
}
