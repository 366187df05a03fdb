package luks

import (
	"os"
	"path/filepath"
	"testing"

	"qimg/image"
	"qimg/internal/drivertest"
)

// Fuzz targets of the LUKS header parser and open, seeded from the heads
// of testdata/luks's images. Run them with, for example
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s -fuzzminimizetime 1x ./formats/luks

// FuzzParseHeader: a header that parses encodes back to the same fields.
func FuzzParseHeader(f *testing.F) {
	for _, name := range qemuImages {
		f.Add(drivertest.Seed(f, "luks", name+".luks")[:headerSize])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b)
		if err != nil {
			return
		}
		if _, err := h.parseAlgorithms(); err != nil {
			return
		}
		if h2, err := parseHeader(h.encode()); err != nil || *h2 != *h {
			t.Fatalf("re-encoded header: %v", err)
		}
	})
}

// FuzzOpen opens small images for info (no key) and with a passphrase,
// then reads them; PBKDF2 iterations are capped low so that a run stays
// short. Errors are fine; panics, hangs and large allocations are not.
func FuzzOpen(f *testing.F) {
	for _, name := range []string{"aes-128-cbc-essiv", "aes-128-ctr-plain-sha512", "cast5-128-cbc-plain64-md5"} {
		f.Add(drivertest.Seed(f, "luks", name+".luks"))
	}
	saved := maxIterations
	maxIterations = 2000
	f.Cleanup(func() { maxIterations = saved })
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		path := filepath.Join(t.TempDir(), "f.luks")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if n, err := image.Open(path, image.OpenOptions{Format: "luks", Claim: image.ClaimInfo, NoDataFile: true}); err == nil {
			_, _ = image.CollectInfo(n)
			n.Close()
		}
		n, err := openLUKS(t, path, testPassword, false)
		if err != nil {
			return
		}
		defer n.Close()
		buf := make([]byte, min(n.Size(), 64<<10))
		_, _ = n.ReadAt(buf, 0)
	})
}
