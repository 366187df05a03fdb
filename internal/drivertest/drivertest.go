// Package drivertest holds what the format drivers' tests share: reading
// seed images from testdata and exercising an arbitrary file as an image
// of a format, the body of their fuzz targets.
package drivertest

import (
	"os"
	"path/filepath"
	"testing"

	"qimg/image"
)

// Seed reads testdata/FORMAT/NAME from a driver package's tests (which
// run two folders below the repository's root).
func Seed(t testing.TB, format, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", format, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Exercise writes b to a file and opens it as an image of format, then
// collects its info, reads its first MiB and walks its block status (at
// most 1000 runs); it returns the first error. Errors are what a fuzz
// target expects; panics, hangs and large allocations are what it finds.
func Exercise(t testing.TB, format string, b []byte) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img."+format)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := image.Open(path, image.OpenOptions{Format: format, Claim: image.ClaimRead, NoBacking: true})
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

// WriteImage writes b to a new file named name in a temporary folder and
// returns its path.
func WriteImage(t testing.TB, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// ReadImage opens path as an image of format and reads it whole in
// pieces of 1000 bytes, which cross every block and sector boundary.
func ReadImage(path, format string) ([]byte, error) {
	n, err := image.Open(path, image.OpenOptions{Format: format, Claim: image.ClaimRead})
	if err != nil {
		return nil, err
	}
	defer n.Close()
	out := make([]byte, n.Size())
	const piece = 1000
	for off := int64(0); off < n.Size(); off += piece {
		end := min(off+piece, n.Size())
		if _, err := n.ReadAt(out[off:end], off); err != nil {
			return nil, err
		}
	}
	return out, nil
}
