package bigbuf

import (
	"runtime"
	"testing"
	"unsafe"
)

func TestAlloc(t *testing.T) {
	for _, size := range []int{1, 4096, 1 << 20, 2 << 20, 3<<20 + 5, 32 << 20} {
		b := Alloc(size)
		if len(b) != size || cap(b) != size {
			t.Fatalf("Alloc(%d): len %d cap %d", size, len(b), cap(b))
		}
		addr := uintptr(unsafe.Pointer(&b[0]))
		if addr%Align != 0 {
			t.Fatalf("Alloc(%d) at %#x: not aligned to %d", size, addr, Align)
		}
		if runtime.GOOS == "linux" && size >= 2<<20 && addr%(2<<20) != 0 {
			t.Fatalf("Alloc(%d) at %#x: not aligned to a huge page", size, addr)
		}
		for i := 0; i < size; i += 4096 {
			if b[i] != 0 {
				t.Fatalf("Alloc(%d): byte %d is %d, not zero", size, i, b[i])
			}
			b[i] = 1
		}
		b[size-1] = 1
		Free(b)
	}
	Free(nil)
}

// Buffers given back are not given back twice, and a buffer from the
// heap is left alone.
func TestFreeOnlyMapped(t *testing.T) {
	Free(make([]byte, 4<<20))
	a := Alloc(4 << 20)
	Free(a)
	Free(a) // unknown now: nothing happens
	b := Alloc(4 << 20)
	b[0] = 1
	Free(b)
}
