package vhdx

import (
	"errors"
	"io"
	"testing"
)

// Fuzz targets of the VHDX parsers, seeded from testdata/vhdx (sparse
// images, see sparseFile). For example
//
//	go test -run XXX -fuzz '^FuzzReplay$' -fuzztime 60s -fuzzminimizetime 2x ./formats/vhdx
//
// (minimizing the large inputs by time would take most of the run).
var fuzzSeeds = []string{"dynamic.seed", "fixed.seed", "blocks1m.seed", "log.seed", "logrun.seed"}

// FuzzOpen parses whole images (headers, log, region table, metadata,
// BAT), checks their BAT, then reads them. Errors are fine; panics, hangs and big
// allocations are not.
func FuzzOpen(f *testing.F) {
	for _, name := range fuzzSeeds {
		f.Add(readSeed(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := decodeSparse(b)
		img, err := open(s, nil)
		if err != nil {
			return
		}
		if _, err := img.checkBATEntries(true, io.Discard); err != nil {
			t.Fatalf("check: %v", err)
		}
		// read the first and last bytes of the first blocks through the BAT
		bs := int64(1) << img.blockBits
		buf := make([]byte, 512)
		for off, n := int64(0), 0; off+bs <= img.Size() && n < 64; off, n = off+bs, n+1 {
			if _, err := img.ReadAt(buf, off+bs-512); err != nil {
				return
			}
			if _, err := img.ReadAt(buf, off); err != nil {
				return
			}
		}
	})
}

// FuzzReplay opens whole images read/write in memory, replaying their
// log: the log walk and the replay must end, bounded, and an image whose
// log was replayed opens read-only afterwards without one.
func FuzzReplay(f *testing.F) {
	for _, name := range fuzzSeeds {
		f.Add(readSeed(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := &memFile{*decodeSparse(b)}
		img, err := open(m, m)
		if err != nil {
			return
		}
		if _, err := open(m, nil); errors.Is(err, errNeedsReplay) {
			t.Fatalf("the log is still there after the open (replayed: %v)", img.replayed)
		}
	})
}
