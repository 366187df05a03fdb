package blkdebug

import (
	"fmt"
	"math"

	"qimg/image"
)

// limits are the request limits a filter imposes on its users (qemu's
// align, max-transfer, opt-write-zero, max-write-zero, opt-discard,
// max-discard): tests use them to make the block layer split and pad.
type limits struct {
	align        int64 // requests are padded to it (reads) or written read-modify-write
	maxTransfer  int64 // reads and writes are split into pieces of at most this
	optWriteZero int64
	maxWriteZero int64
	optDiscard   int64
	maxDiscard   int64
}

// parseLimits reads the size options (their type checked), as qemu's
// blkdebug_open checks them; other keys are not its business.
func parseLimits(opts map[string]string) (limits, error) {
	var l limits
	fields := []struct {
		key  string
		dst  *int64
		unit func() int64 // what the value must be a multiple of
	}{
		{"align", &l.align, nil},
		{"max-transfer", &l.maxTransfer, l.alignment},
		{"opt-write-zero", &l.optWriteZero, l.alignment},
		{"max-write-zero", &l.maxWriteZero, func() int64 { return max(l.optWriteZero, l.alignment()) }},
		{"opt-discard", &l.optDiscard, l.alignment},
		{"max-discard", &l.maxDiscard, func() int64 { return max(l.optDiscard, l.alignment()) }},
	}
	for _, f := range fields {
		s, ok := opts[f.key]
		if !ok {
			continue
		}
		v, err := image.ParseSize(s)
		if err != nil {
			return limits{}, fmt.Errorf("Parameter '%s' expects a non-negative number below 2^64", f.key)
		}
		*f.dst = v
		bad := v >= math.MaxInt32
		if f.unit == nil {
			bad = bad || v&(v-1) != 0
		} else {
			bad = bad || v%f.unit() != 0
		}
		if v != 0 && bad {
			return limits{}, fmt.Errorf("Cannot meet constraints with %s %d", f.key, v)
		}
	}
	return l, nil
}

// alignment is the request alignment, 1 when none was given.
func (l *limits) alignment() int64 { return max(l.align, 1) }

// pad widens [off, off+n) to the alignment.
func (l *limits) pad(off, n int64) (int64, int64) {
	a := l.alignment()
	return off / a * a, (off + n + a - 1) / a * a
}

// split runs fn over [off, off+length) in pieces of at most max-transfer
// bytes, stopping at the first error.
func (d *Device) split(off, length int64, fn func(o, n int64) error) error {
	step := d.limits.maxTransfer
	if step <= 0 {
		step = max(length, 1)
	}
	for done := int64(0); done < length; done += step {
		if err := fn(off+done, min(step, length-done)); err != nil {
			return err
		}
	}
	return nil
}
