//go:build !linux

package luks

import "time"

// threadClock is the wall clock where the thread's CPU time cannot be read.
func threadClock() (now func() time.Duration, release func()) {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }, func() {}
}
