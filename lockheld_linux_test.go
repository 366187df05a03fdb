package main

import "golang.org/x/sys/unix"

// lockHeld reports whether another open file description holds a lock on
// bytes [start, start+length) of path (OFD locks see those of this
// process's other descriptions too).
func lockHeld(path string, start, length int64) (bool, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: start, Len: length}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &fl); err != nil {
		return false, err
	}
	return fl.Type != unix.F_UNLCK, nil
}
