//go:build linux

package luks

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// threadClock reads the user CPU time of the calling thread, as qemu's
// PBKDF2 benchmark does (RUSAGE_THREAD), so that a busy machine does not
// shrink the iteration count; release unpins the goroutine.
func threadClock() (now func() time.Duration, release func()) {
	runtime.LockOSThread()
	return func() time.Duration {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
			return 0
		}
		return time.Duration(ru.Utime.Nano())
	}, runtime.UnlockOSThread
}
