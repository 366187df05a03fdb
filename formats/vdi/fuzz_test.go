package vdi

import (
	"os"
	"path/filepath"
	"testing"

	"qimg/image"
)

// Fuzz targets of the header parser and of whole small images, seeded
// from testdata/vdi (static.vdi is cut after its block map). Run with
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s ./formats/vdi
var fuzzSeeds = []string{"dyn.vdi", "static.vdi", "empty.vdi"}

func seed(f *testing.F, name string) []byte {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "vdi", name))
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzParseHeader: any header either fails or yields a block map that
// lies inside the file and a size within VDI's limits.
func FuzzParseHeader(f *testing.F) {
	for _, name := range fuzzSeeds {
		b := seed(f, name)
		f.Add(b[:headerSize], int64(len(b)))
	}
	f.Fuzz(func(t *testing.T, b []byte, fileSize int64) {
		fileSize = max(fileSize, int64(len(b)))
		h, err := parseHeader(b, fileSize)
		if err != nil {
			return
		}
		if int64(h.offsetBmap)+h.bmapBytes() > fileSize || h.diskSize > maxDiskSize || h.blocksInImage > maxBlocks {
			t.Fatalf("accepted out-of-bounds header: %+v", h)
		}
	})
}

// FuzzOpen opens whole images, reads them, walks block status and checks
// them. Errors are fine; panics are not.
func FuzzOpen(f *testing.F) {
	for _, name := range fuzzSeeds {
		f.Add(seed(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		path := filepath.Join(t.TempDir(), "f.vdi")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_ = openAndWalk(path)
	})
}

func openAndWalk(path string) error {
	n, err := image.Open(path, image.OpenOptions{Format: "vdi", Claim: image.ClaimRead, NoBacking: true})
	if err != nil {
		return err
	}
	defer n.Close()
	if _, err := image.CollectInfo(n); err != nil {
		return err
	}
	buf := make([]byte, min(n.Size(), 4<<20))
	if _, err := n.ReadAt(buf, 0); err != nil {
		return err
	}
	for off, i := int64(0), 0; off < n.Size() && i < 100; i++ {
		e, err := n.BlockStatus(off, n.Size()-off)
		if err != nil {
			return err
		}
		off = e.End()
	}
	_, err = image.Check(n, 0, discard{})
	return err
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
