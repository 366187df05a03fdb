//go:build linux && !qimg_posixlocks && !qimg_portable

package lock

import "golang.org/x/sys/unix"

// Linux: open-file-description locks, owned by the open file (not the
// process), so two opens in one process see each other, and closing
// another descriptor of the file drops nothing.

// Fallback reports whether locks are POSIX locks standing in for OFD ones.
const Fallback = false

func (f *File) lockShared(off int64) error { return f.fcntl(off, unix.F_RDLCK, "Failed to lock byte") }

func (f *File) unlock(off int64) error { return f.fcntl(off, unix.F_UNLCK, "Failed to unlock byte") }

func (f *File) fcntl(off int64, typ int16, what string) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(f.fd, unix.F_OFD_SETLK, &lk); err != nil {
		return &byteError{what: what, off: off, err: err}
	}
	return nil
}

// test reports whether another file description holds a lock on byte off
// that would conflict with an exclusive lock.
func (f *File) test(off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(f.fd, unix.F_OFD_GETLK, &lk); err != nil {
		return false, &byteError{what: "Failed to test byte", off: off, err: err}
	}
	return lk.Type != unix.F_UNLCK, nil
}

// NoOFD reports whether the system lacks OFD locks.
const NoOFD = false

// identify has nothing to record: the kernel tells descriptions apart.
func (f *File) identify() {}

// AfterClose has nothing to do: closing the descriptor dropped exactly
// the locks of its open file description.
func (f *File) AfterClose() { f.perm, f.unshar = 0, 0 }
