//go:build !linux

package bigbuf

func alloc(size int) []byte { return heapAlloc(size) }

func free([]byte) {}
