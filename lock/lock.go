// Package lock implements QEMU's image locking protocol with byte-range
// locks: Linux open-file-description (OFD) locks, POSIX locks where there
// are none (macOS, FreeBSD; QEMU falls back to them the same way), and
// LockFileEx on Windows. One file per platform implements the three byte
// operations (lock_ofd.go, lock_posix.go, lock_windows.go); the build tag
// qimg_posixlocks (or qimg_portable, which picks every portable fallback)
// makes a Linux build use the POSIX fallback, so that the whole test suite
// can run against it.
//
// For each permission bit i (0 consistent-read, 1 write, 2 write-unchanged,
// 3 resize), a process holds a shared lock on byte 100+i while it holds
// permission i, and on byte 200+i while it does not let others take it.
// Before claiming bit i it tests byte 200+i for a lock of another file
// description; before refusing bit i it tests byte 100+i. Byte 0 belongs to
// libvirt and bytes 104/204 (QEMU's old graph-mod bit) are never touched.
package lock

import (
	"fmt"
)

// Bits is the number of permission bits mirrored in locks.
const Bits = 4

const (
	permBase   = 100 // byte 100+i: holding permission i
	sharedBase = 200 // byte 200+i: not sharing permission i
)

// FallbackWarning is what QEMU says when it falls back to POSIX locks
// (NoOFD), a warning and then a line of its own.
const FallbackWarning = "File lock requested but OFD locking syscall is unavailable, " +
	"falling back to POSIX file locks\nDue to the implementation, locks can be lost unexpectedly."

// Conflict says which lock another process holds.
type Conflict struct {
	Bit    uint // permission bit
	Shared bool // true: we wanted to refuse Bit but someone holds it
}

func (c *Conflict) Error() string {
	if c.Shared {
		return fmt.Sprintf("lock conflict: permission bit %d is held by another process", c.Bit)
	}
	return fmt.Sprintf("lock conflict: another process refuses to share permission bit %d", c.Bit)
}

// File holds the lock state of one open file description.
type File struct {
	fd       uintptr // a descriptor, or a handle on Windows
	perm     uint8   // bits whose 100+i byte we hold
	unshar   uint8   // bits whose 200+i byte we hold
	dev, ino uint64  // the file, where the process's own locks are tracked (POSIX)
}

// New starts lock bookkeeping for fd; no lock is taken.
// On Windows fd is the file's handle.
func New(fd int) *File {
	f := &File{fd: uintptr(fd)}
	f.identify()
	return f
}

// Set takes exactly the locks for holding perm and refusing to share
// everything not in shared. New locks are taken first and the opposite
// bytes tested afterwards, so two processes racing for the same image
// cannot both succeed; on a conflict the previous locks are restored.
func (f *File) Set(perm, shared uint8) error {
	const all = 1<<Bits - 1
	perm &= all
	unshared := ^shared & all
	oldPerm, oldUnshar := f.perm, f.unshar
	if err := f.take(perm|oldPerm, unshared|oldUnshar); err != nil {
		f.drop(oldPerm, oldUnshar)
		return err
	}
	if err := f.testConflicts(perm&^oldPerm, unshared&^oldUnshar); err != nil {
		f.drop(oldPerm, oldUnshar)
		return err
	}
	return f.drop(perm, unshared)
}

// take adds locks so that at least perm and unshared are held.
func (f *File) take(perm, unshared uint8) error {
	for i := uint(0); i < Bits; i++ {
		if perm&(1<<i) != 0 && f.perm&(1<<i) == 0 {
			if err := f.lockShared(permBase + int64(i)); err != nil {
				return err
			}
			f.perm |= 1 << i
		}
		if unshared&(1<<i) != 0 && f.unshar&(1<<i) == 0 {
			if err := f.lockShared(sharedBase + int64(i)); err != nil {
				return err
			}
			f.unshar |= 1 << i
		}
	}
	return nil
}

// drop releases every lock not in perm and unshared.
func (f *File) drop(perm, unshared uint8) error {
	var first error
	for i := uint(0); i < Bits; i++ {
		if perm&(1<<i) == 0 && f.perm&(1<<i) != 0 {
			if err := f.unlock(permBase + int64(i)); err != nil && first == nil {
				first = err
			}
			f.perm &^= 1 << i
		}
		if unshared&(1<<i) == 0 && f.unshar&(1<<i) != 0 {
			if err := f.unlock(sharedBase + int64(i)); err != nil && first == nil {
				first = err
			}
			f.unshar &^= 1 << i
		}
	}
	return first
}

// testConflicts checks the newly claimed bits against other processes.
func (f *File) testConflicts(perm, unshared uint8) error {
	for i := uint(0); i < Bits; i++ {
		if perm&(1<<i) != 0 {
			if locked, err := f.test(sharedBase + int64(i)); err != nil {
				return err
			} else if locked {
				return &Conflict{Bit: i}
			}
		}
		if unshared&(1<<i) != 0 {
			if locked, err := f.test(permBase + int64(i)); err != nil {
				return err
			} else if locked {
				return &Conflict{Bit: i, Shared: true}
			}
		}
	}
	return nil
}

// Inherit takes on f the locks old holds, without testing for conflicts:
// old's locks keep conflicting claims out until old's descriptor closes.
// This moves locks to a descriptor reopened with another mode, as QEMU's
// file-posix does; the caller then closes old's descriptor. On an error f
// holds nothing.
func (f *File) Inherit(old *File) error {
	if err := f.take(old.perm, old.unshar); err != nil {
		f.drop(0, 0)
		return err
	}
	return nil
}

// Release drops every lock.
func (f *File) Release() error { return f.Set(0, 1<<Bits-1) }

// Held returns the bits currently held and refused.
func (f *File) Held() (perm, unshared uint8) { return f.perm, f.unshar }

// byteError is a failed fcntl on one lock byte (a file system without OFD
// locks, say), worded as QEMU's: "Failed to lock byte 100: No locks
// available".
type byteError struct {
	what string
	off  int64
	err  error
}

func (e *byteError) Error() string {
	s := e.err.Error()
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		s = string(s[0]-'a'+'A') + s[1:]
	}
	return fmt.Sprintf("%s %d: %s", e.what, e.off, s)
}

func (e *byteError) Unwrap() error { return e.err }
