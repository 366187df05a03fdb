package iobench

import (
	"slices"
	"testing"
)

// Flushes come where qemu's completion callback finds the requests not
// yet sent a multiple of the interval.
func TestFlushPoints(t *testing.T) {
	for _, tc := range []struct {
		r    Request
		want []int // remaining requests at each flush
	}{
		{Request{Count: 10, Depth: 4, Write: true, FlushInterval: 100}, []int{0}},
		{Request{Count: 250, Depth: 64, Write: true, FlushInterval: 100}, []int{100, 0}},
		// the first depth requests go out before any check: 150-64 < 100
		{Request{Count: 150, Depth: 64, Write: true, FlushInterval: 100}, []int{0}},
		{Request{Count: 300, Depth: 16, Write: true, FlushInterval: 100}, []int{200, 100, 0}},
	} {
		var got []int
		for _, p := range flushPoints(tc.r) {
			if !p.flush {
				t.Fatalf("%+v: a point without flush", tc.r)
			}
			got = append(got, p.remaining)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%+v: flushes at %v remaining, want %v", tc.r, got, tc.want)
		}
	}
	// no flush at all for reads or without an interval
	for _, r := range []Request{{Count: 100, Depth: 4}, {Count: 100, Depth: 4, Write: true}} {
		if p := flushPoints(r); len(p) != 1 || p[0].flush || p[0].remaining != 0 {
			t.Errorf("%+v: %v, want one point without flush", r, p)
		}
	}
}
