package bochs

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen opens arbitrary (small) files as bochs and reads them: errors
// are fine; panics, hangs and allocations beyond the caps are not.
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s ./formats/bochs
func FuzzOpen(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "bochs", "v2.bochs"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	v1 := defaultLayout()
	v1.v1 = true
	f.Add(v1.generate(1))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		path := filepath.Join(t.TempDir(), "img.bochs")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = readSome(path)
	})
}
