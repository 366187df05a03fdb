package qcow2

import (
	"testing"
)

var fuzzSeeds = []string{"v2.qcow2", "v3-rb1.qcow2", "ext.qcow2", "snap.qcow2", "backing.qcow2"}

// FuzzParseHeader feeds the header parser arbitrary first clusters.
func FuzzParseHeader(f *testing.F) {
	for _, name := range fuzzSeeds {
		b := seed(f, name)
		f.Add(b[:min(len(b), 4096)], int64(len(b)))
	}
	f.Fuzz(func(t *testing.T, b []byte, fileSize int64) {
		if fileSize < int64(len(b)) {
			fileSize = int64(len(b))
		}
		h, err := parseHeader(b, fileSize)
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
		if _, err := parseHeader(append(enc, make([]byte, 64)...), fileSize); err != nil {
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
