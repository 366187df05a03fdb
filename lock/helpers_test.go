package lock

import (
	"errors"
	"os"
	"testing"
)

// Permission bits as the tests spell them.
const (
	bRead  = 1 << 0 // consistent-read
	bWrite = 1 << 1
	bWU    = 1 << 2 // write-unchanged
	bSize  = 1 << 3 // resize
	bAll   = bRead | bWrite | bWU | bSize
)

func openLock(t *testing.T, path string) *File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	l := New(int(f.Fd()))
	t.Cleanup(func() {
		f.Close()
		l.AfterClose()
	})
	return l
}

func isConflict(err error, bit uint, shared bool) bool {
	var c *Conflict
	return errors.As(err, &c) && c.Bit == bit && c.Shared == shared
}
