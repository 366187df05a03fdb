package vhdx

import (
	"io"
	"testing"
)

// Fuzz targets of the VHDX parsers, seeded from testdata/vhdx (sparse
// images, see sparseFile). For example
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s ./formats/vhdx
var fuzzSeeds = []string{"dynamic.seed", "fixed.seed", "blocks1m.seed", "log.seed"}

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
