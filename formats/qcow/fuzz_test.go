package qcow

import (
	"os"
	"path/filepath"
	"testing"

	"qimg/image"

	_ "qimg/formats/file"
)

// Fuzz target of the qcow header and table parsers, seeded from
// testdata/qcow:
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s -fuzzminimizetime 1x ./formats/qcow
var fuzzSeeds = []string{"small.qcow", "backing.qcow"}

func seed(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "qcow", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openBytes opens b as a qcow image, collects its info, reads its first
// MiB and walks its block status; it returns the first error.
func openBytes(t testing.TB, b []byte) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.qcow")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := image.Open(path, image.OpenOptions{Format: "qcow", Claim: image.ClaimRead, NoBacking: true})
	if err != nil {
		return err
	}
	defer n.Close()
	if _, err := image.CollectInfo(n); err != nil {
		return err
	}
	buf := make([]byte, min(n.Size(), 1<<20))
	if _, err := n.ReadAt(buf, 0); err != nil {
		return err
	}
	for off, steps := int64(0), 0; off < n.Size() && steps < 1000; steps++ {
		e, err := n.BlockStatus(off, n.Size()-off)
		if err != nil {
			return err
		}
		off = e.End()
	}
	return nil
}

func TestSeedsOpen(t *testing.T) {
	for _, name := range fuzzSeeds {
		if err := openBytes(t, seed(t, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzOpen opens whole small images: errors are fine, panics, hangs and
// large allocations are not.
func FuzzOpen(f *testing.F) {
	for _, name := range fuzzSeeds {
		f.Add(seed(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		_ = openBytes(t, b)
	})
}
