package cloop

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen opens arbitrary (small) files as cloop and reads them: errors
// are fine; panics, hangs and allocations beyond the caps are not.
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s ./formats/cloop
func FuzzOpen(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "cloop", "small.cloop"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	img, _ := generate(4096, 3, 1)
	f.Add(img)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		path := filepath.Join(t.TempDir(), "img.cloop")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = readSome(path)
	})
}
