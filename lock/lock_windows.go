//go:build windows

package lock

import "golang.org/x/sys/windows"

// Windows: the same bytes with LockFileEx. QEMU's Windows build takes no
// locks; these keep two qimg processes (and any tool taking the same
// bytes) from writing one image at once, and never refuse what a reader
// that takes no locks does.

// Fallback reports whether locks are POSIX locks standing in for OFD ones.
const Fallback = false

func (f *File) lockShared(off int64) error {
	ol := overlapped(off)
	err := windows.LockFileEx(windows.Handle(f.fd), windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
	if err != nil {
		return &byteError{what: "Failed to lock byte", off: off, err: err}
	}
	return nil
}

func (f *File) unlock(off int64) error {
	if err := windows.UnlockFileEx(windows.Handle(f.fd), 0, 1, 0, overlapped(off)); err != nil {
		return &byteError{what: "Failed to unlock byte", off: off, err: err}
	}
	return nil
}

// test tries an exclusive lock on byte off: it fails while anyone holds
// the byte. A byte this handle holds itself is let go for the test and
// taken again, as a lock region cannot be tested around its own holder.
func (f *File) test(off int64) (bool, error) {
	own := f.holds(off)
	if own {
		if err := f.unlock(off); err != nil {
			return false, err
		}
		defer f.lockShared(off)
	}
	h := windows.Handle(f.fd)
	err := windows.LockFileEx(h, windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, overlapped(off))
	if err == windows.ERROR_LOCK_VIOLATION {
		return true, nil
	}
	if err != nil {
		return false, &byteError{what: "Failed to test byte", off: off, err: err}
	}
	windows.UnlockFileEx(h, 0, 1, 0, overlapped(off))
	return false, nil
}

func (f *File) holds(off int64) bool {
	switch {
	case off >= permBase && off < permBase+Bits:
		return f.perm&(1<<(off-permBase)) != 0
	case off >= sharedBase && off < sharedBase+Bits:
		return f.unshar&(1<<(off-sharedBase)) != 0
	}
	return false
}

func overlapped(off int64) *windows.Overlapped {
	return &windows.Overlapped{Offset: uint32(off), OffsetHigh: uint32(off >> 32)}
}

// NoOFD reports whether the system lacks OFD locks: Windows's locks
// belong to the handle as OFD locks do, no warning is due.
const NoOFD = false

// identify has nothing to record: the kernel tells descriptions apart.
func (f *File) identify() {}

// AfterClose has nothing to do: closing the handle dropped exactly its
// locks.
func (f *File) AfterClose() { f.perm, f.unshar = 0, 0 }
