package dmg_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"qimg/image"
	"qimg/internal/drivertest"
)

// Fuzz target of the trailer, fork, property list and mish parsers and
// of the chunk reader, seeded from testdata/dmg (images of the
// generator; QIMG_UPDATE_SEEDS=1 writes them again):
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s -fuzzminimizetime 1x ./formats/dmg
var seeds = map[string]imageSpec{
	"rsrc.dmg": {chunks: []genChunk{rawChunk(pattern(1024, 1)), zeroChunk(typeZero, 4), zlibChunk(pattern(2048, 2)), bzip2Chunk()}, blocks: 2},
	"xml.dmg":  {chunks: []genChunk{zlibChunk(pattern(4096, 3)), zeroChunk(typeIgnore, 2), rawChunk(pattern(512, 4))}, blocks: 2, xml: true},
}

func TestSeeds(t *testing.T) {
	for name, spec := range seeds {
		b := spec.build()
		path := filepath.Join("..", "..", "testdata", "dmg", name)
		if os.Getenv("QIMG_UPDATE_SEEDS") == "1" {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(drivertest.Seed(t, "dmg", name), b) {
			t.Errorf("%s differs from the generator's image (QIMG_UPDATE_SEEDS=1 writes it)", name)
		}
		if err := drivertest.Exercise(t, "dmg", b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if got := readAll(t, b); !bytes.Equal(got, guest(spec.chunks)) {
			t.Errorf("%s: data differs from the generator's", name)
		}
	}
}

// readAll opens an image and reads it whole in odd pieces.
func readAll(t *testing.T, b []byte) []byte {
	dir := writeImage(t, b)
	n, err := image.Open(filepath.Join(dir, "x.dmg"), image.OpenOptions{Format: "dmg", Claim: image.ClaimRead})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	out := make([]byte, n.Size())
	for off := int64(0); off < n.Size(); off += 1000 {
		if _, err := n.ReadAt(out[off:min(off+1000, n.Size())], off); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// FuzzOpen opens whole small images, reads and maps them: errors are
// fine, panics, hangs and large allocations are not.
func FuzzOpen(f *testing.F) {
	for name := range seeds {
		f.Add(drivertest.Seed(f, "dmg", name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		_ = drivertest.Exercise(t, "dmg", b)
	})
}
