//go:build darwin || freebsd || netbsd || openbsd || dragonfly || (linux && (qimg_posixlocks || qimg_portable))

package lock

import (
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Where OFD locks do not exist, the same bytes are locked with POSIX
// locks, as QEMU falls back to them. POSIX locks belong to the process:
// F_GETLK does not see the process's own locks, unlocking a byte through
// one descriptor unlocks it for all, and closing any descriptor of the
// file drops them all. So this process's own descriptions of a file are
// told apart here, as the kernel tells OFD locks apart: a byte held by
// another File of the process conflicts, is unlocked only when no File
// holds it any more, and is taken again after another File's descriptor
// closed (AfterClose).

// Fallback reports whether locks are POSIX locks standing in for OFD ones.
const Fallback = true

// NoOFD reports whether the system lacks OFD locks (not a Linux build
// told to use POSIX locks): QEMU warns there.
const NoOFD = runtime.GOOS != "linux"

// byteKey is one lock byte of one file, by device and inode.
type byteKey struct {
	dev, ino uint64
	off      int64
}

// holders lists, per lock byte, the Files of this process holding it.
var holders = struct {
	sync.Mutex
	m map[byteKey]map[*File]bool
}{m: map[byteKey]map[*File]bool{}}

// identify records which file f's descriptor is open on.
func (f *File) identify() {
	var st unix.Stat_t
	if unix.Fstat(int(f.fd), &st) == nil {
		f.dev, f.ino = uint64(st.Dev), uint64(st.Ino)
	}
}

func (f *File) key(off int64) (byteKey, error) {
	if f.dev == 0 && f.ino == 0 {
		return byteKey{}, unix.EBADF
	}
	return byteKey{f.dev, f.ino, off}, nil
}

func (f *File) lockShared(off int64) error {
	k, err := f.key(off)
	if err != nil {
		return &byteError{what: "Failed to lock byte", off: off, err: err}
	}
	holders.Lock()
	defer holders.Unlock()
	if err := f.fcntl(off, unix.F_RDLCK, "Failed to lock byte"); err != nil {
		return err
	}
	if holders.m[k] == nil {
		holders.m[k] = map[*File]bool{}
	}
	holders.m[k][f] = true
	return nil
}

func (f *File) unlock(off int64) error {
	k, err := f.key(off)
	if err != nil {
		return &byteError{what: "Failed to unlock byte", off: off, err: err}
	}
	holders.Lock()
	defer holders.Unlock()
	delete(holders.m[k], f)
	if len(holders.m[k]) > 0 {
		return nil // another File of this process still holds it
	}
	delete(holders.m, k)
	return f.fcntl(off, unix.F_UNLCK, "Failed to unlock byte")
}

func (f *File) fcntl(off int64, typ int16, what string) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(f.fd, unix.F_SETLK, &lk); err != nil {
		return &byteError{what: what, off: off, err: err}
	}
	return nil
}

// test reports whether another File of this process, or another process,
// holds a lock on byte off that would conflict with an exclusive lock.
func (f *File) test(off int64) (bool, error) {
	k, err := f.key(off)
	if err != nil {
		return false, &byteError{what: "Failed to test byte", off: off, err: err}
	}
	holders.Lock()
	for h := range holders.m[k] {
		if h != f {
			holders.Unlock()
			return true, nil
		}
	}
	holders.Unlock()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(f.fd, unix.F_GETLK, &lk); err != nil {
		return false, &byteError{what: "Failed to test byte", off: off, err: err}
	}
	return lk.Type != unix.F_UNLCK, nil
}

// AfterClose is called when f's descriptor has been closed, which dropped
// every POSIX lock of the process on the file: f's bytes are forgotten and
// those the process's other Files hold on the file are taken again.
func (f *File) AfterClose() {
	holders.Lock()
	defer holders.Unlock()
	for k, files := range holders.m {
		if k.dev != f.dev || k.ino != f.ino {
			continue
		}
		delete(files, f)
		for h := range files {
			_ = h.fcntl(k.off, unix.F_RDLCK, "Failed to lock byte")
		}
		if len(files) == 0 {
			delete(holders.m, k)
		}
	}
	f.perm, f.unshar = 0, 0
}
