// Package iobench runs qemu-img bench's request pattern against an image
// node: count requests of one size, at offsets advancing by a step and
// wrapping at the image's end, depth of them in flight at once, with a
// flush every so many requests when writing.
package iobench

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"qimg/image"
)

// Request is one benchmark run; its fields are qemu-img bench's options.
type Request struct {
	Count         int   // -c: requests to send
	Depth         int   // -d: requests in flight at once
	Offset        int64 // -o: offset of the first request
	BufSize       int   // -s: bytes per request
	Step          int   // -S: offset increment (BufSize when 0)
	Write         bool  // -w
	Pattern       byte  // --pattern: the byte written
	FlushInterval int   // --flush-interval: a flush every so many requests (writes)
	NoDrain       bool  // --no-drain: flush without waiting for the requests in flight
}

// maxBufferBytes bounds the read buffers of the requests in flight: qemu
// allocates depth×size at once, which a large -d and -s turn into
// gigabytes; past this bound fewer requests are in flight at a time.
const maxBufferBytes = 256 << 20

// ErrRequest wraps a failed request as qemu-img words it.
var ErrRequest = errors.New("Failed request")

// Run sends the requests to n. Requests past the image's end fail as in
// qemu ("Failed request: Input/output error").
func Run(n *image.Node, r Request) error {
	if r.Count > 0 && r.Depth <= 0 {
		return errors.New("the queue depth must be at least 1")
	}
	step := int64(r.Step)
	if step == 0 {
		step = int64(r.BufSize)
	}
	size := n.Size()
	inFlight := min(r.Depth, max(1, maxBufferBytes/max(r.BufSize, 1)))
	pattern := make([]byte, r.BufSize)
	for i := range pattern {
		pattern[i] = r.Pattern
	}

	// offsets as qemu computes them: the first as given, then advancing
	// by the step modulo the size
	next := r.Offset
	offsets := func(k int) []int64 {
		out := make([]int64, k)
		for i := range out {
			out[i] = next
			next += step
			if size > 0 {
				next %= size
			}
		}
		return out
	}

	issued := 0
	for _, boundary := range flushPoints(r) {
		if err := send(n, r, offsets(r.Count-issued-boundary.remaining), inFlight, pattern); err != nil {
			return err
		}
		issued = r.Count - boundary.remaining
		if boundary.flush {
			if err := n.Flush(); err != nil {
				return fmt.Errorf("Failed flush request: %s", image.Strerror(err))
			}
		}
	}
	return nil
}

// flushPoint is a moment of the run: when remaining requests are still
// to be sent, flush (or, for the last point, just stop).
type flushPoint struct {
	remaining int
	flush     bool
}

// flushPoints lists where a run flushes: qemu checks, as each request
// completes, whether the requests not yet sent are a multiple of the
// interval, so the points are those multiples below what the first depth
// requests leave, down to 0 (a flush after the last request).
func flushPoints(r Request) []flushPoint {
	if !r.Write || r.FlushInterval <= 0 {
		return []flushPoint{{remaining: 0}}
	}
	var points []flushPoint
	first := r.Count - min(r.Depth, r.Count)
	for m := first / r.FlushInterval; m >= 0; m-- {
		points = append(points, flushPoint{remaining: m * r.FlushInterval, flush: true})
	}
	return points
}

// send runs the requests at offsets, inFlight at a time, and returns the
// first failure.
func send(n *image.Node, r Request, offsets []int64, inFlight int, pattern []byte) error {
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		work     = make(chan int64)
	)
	for range min(inFlight, len(offsets)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := pattern
			if !r.Write {
				buf = make([]byte, r.BufSize)
			}
			for off := range work {
				if err := request(n, r.Write, buf, off); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, off := range offsets {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		work <- off
	}
	close(work)
	wg.Wait()
	return firstErr
}

func request(n *image.Node, write bool, buf []byte, off int64) error {
	if off < 0 || off+int64(len(buf)) > n.Size() {
		return fmt.Errorf("%w: %s", ErrRequest, image.Strerror(syscall.EIO))
	}
	if len(buf) == 0 {
		return nil
	}
	var err error
	if write {
		_, err = n.WriteAt(buf, off)
	} else {
		_, err = n.ReadAt(buf, off)
	}
	if err != nil {
		return fmt.Errorf("%w: %s", ErrRequest, image.Strerror(err))
	}
	return nil
}
