//go:build darwin || freebsd || netbsd || openbsd || dragonfly || (linux && (qimg_posixlocks || qimg_portable))

package lock

import "golang.org/x/sys/unix"

// Where OFD locks do not exist, the same bytes are locked with POSIX
// locks, as QEMU falls back to them. POSIX locks belong to the process:
// F_GETLK does not see the process's own locks (the block graph refuses
// conflicts inside one process before locks are asked), and closing any
// descriptor of the file drops them all, which is why a file keeps one
// descriptor for the life of the open.

// Fallback reports whether locks are POSIX locks standing in for OFD ones.
const Fallback = true

// FallbackWarning is what QEMU says when it falls back to POSIX locks.
const FallbackWarning = "File lock requested but OFD locking syscall is unavailable, " +
	"falling back to POSIX file locks. Due to the implementation, locks can be lost unexpectedly."

func (f *File) lockShared(off int64) error { return f.fcntl(off, unix.F_RDLCK, "Failed to lock byte") }

func (f *File) unlock(off int64) error { return f.fcntl(off, unix.F_UNLCK, "Failed to unlock byte") }

func (f *File) fcntl(off int64, typ int16, what string) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(f.fd, unix.F_SETLK, &lk); err != nil {
		return &byteError{what: what, off: off, err: err}
	}
	return nil
}

// test reports whether another process holds a lock on byte off that
// would conflict with an exclusive lock.
func (f *File) test(off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(f.fd, unix.F_GETLK, &lk); err != nil {
		return false, &byteError{what: "Failed to test byte", off: off, err: err}
	}
	return lk.Type != unix.F_UNLCK, nil
}
