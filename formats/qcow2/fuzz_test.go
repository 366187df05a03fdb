package qcow2

import (
	"testing"
)

// Fuzz targets of the qcow2 parsers, seeded from testdata/qcow2. Run them
// with a short minimisation, for example
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s -fuzzminimizetime 1x ./formats/qcow2
//
// Go minimises every new interesting input by running it again many
// times; for targets that open a whole image that takes long enough to
// look like a stalled fuzzer (0 execs/sec) with the default of 60 s.
var fuzzSeeds = []string{"v2.qcow2", "v3-rb1.qcow2", "ext.qcow2", "snap.qcow2", "backing.qcow2"}

// FuzzParseHeader feeds the header parser arbitrary first clusters.
func FuzzParseHeader(f *testing.F) {
	for _, name := range fuzzSeeds {
		b := seed(f, name)
		f.Add(b[:min(len(b), 4096)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b)
		if err != nil {
			return
		}
		// a header that parses re-encodes (when it fits) and parses again
		if h.clusterSize() < int64(len(b)) {
			return
		}
		enc, err := h.encode()
		if err != nil {
			return
		}
		if _, err := parseHeader(append(enc, make([]byte, 64)...)); err != nil {
			t.Fatalf("re-encoded header does not parse: %v", err)
		}
	})
}

// FuzzOpen opens whole (small) images: header, L1/L2 tables, refcounts,
// snapshot table, bitmap directory and compressed clusters, then reads
// and walks block status. Errors are fine; panics and hangs are not.
func FuzzOpen(f *testing.F) {
	for _, name := range fuzzSeeds {
		b := seed(f, name)
		f.Add(b[:min(len(b), 16<<10)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		_ = openBytes(t, b, false)
	})
}

// FuzzL2 walks arbitrary L2 tables: the entry classifier, subcluster
// bitmaps, compressed descriptors and run merging, for every cluster size
// and both entry widths. Walks must tile the table without overlap.
func FuzzL2(f *testing.F) {
	for _, name := range fuzzSeeds {
		b := seed(f, name)
		f.Add(uint8(12), true, b[min(len(b), 16384):min(len(b), 16384+4096)])
		f.Add(uint8(9), false, b[min(len(b), 4096):min(len(b), 4096+512)])
	}
	f.Fuzz(func(t *testing.T, bits uint8, ext bool, table []byte) {
		cb := uint32(bits)%(maxClusterBits-minClusterBits+1) + minClusterBits
		if ext && cb < minExtendedL2ClusterBits {
			cb = minExtendedL2ClusterBits
		}
		cs := int64(1) << cb
		buf := make([]byte, cs)
		copy(buf, table)
		q := &Image{filename: "fuzz", clusterBits: cb, clusterSize: cs, extendedL2: ext}
		q.l2Bits = cb - 3
		if ext {
			q.l2Bits = cb - 4
		}
		q.cls = classifier{version: 3, clusterBits: cb, extendedL2: ext}
		tbl := decodeL2(cs, buf, ext)
		span := cs << q.l2Bits
		for _, start := range []int64{0, 1, cs - 1, cs + 513, span / 2} {
			off := start
			for steps := 0; off < span && steps < 1<<12; steps++ {
				m, err := q.walkL2(tbl, off, span-off)
				if err != nil {
					break
				}
				if m.length <= 0 || m.length > span-off {
					t.Fatalf("run [%d,+%d) outside [%d,%d)", off, m.length, off, span)
				}
				if m.typ == ctCompressed {
					o, l := compressedDescriptor(m.entry, cb)
					if o < 0 || l <= 0 {
						t.Fatalf("compressed descriptor %#x: offset %d length %d", uint64(m.entry), o, l)
					}
				}
				off += m.length
			}
		}
	})
}
