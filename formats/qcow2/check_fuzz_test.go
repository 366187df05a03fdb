package qcow2

import (
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"qimg/image"
)

// FuzzCheck checks arbitrary (small) images, then repairs them with -r all
// and checks them again: errors are fine; panics, hangs and memory out of
// proportion to the file are not. A repair that reports success must
// leave an image its own check calls clean of what it repaired.
func FuzzCheck(f *testing.F) {
	for _, name := range fuzzSeeds {
		b := seed(f, name)
		f.Add(b[:min(len(b), 256<<10)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		path := filepath.Join(t.TempDir(), "img.qcow2")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, fix := range []image.CheckFix{0, image.FixLeaks | image.FixErrors} {
			o := image.OpenOptions{Format: "qcow2", Claim: image.ClaimRead, NoBacking: true, Check: true}
			if fix != 0 {
				o.Writable, o.Claim = true, image.ClaimWrite
			}
			n, err := image.Open(path, o)
			if err != nil {
				return
			}
			r, err := checkWithin(t, n, fix, fuzzCheckTimeout)
			n.Close()
			if err != nil {
				return
			}
			if r.TotalClusters < 0 || r.AllocatedClusters < 0 || r.ImageEndOffset <= 0 {
				t.Fatalf("impossible result %+v", *r)
			}
			// the bytes the file occupies, not its apparent size: a repair
			// may grow it sparsely (to a refcount table far out) as
			// qemu-img's does
			if st, err := os.Stat(path); err == nil && allocatedBytes(st) > int64(len(b))+64<<20 {
				t.Fatalf("the repair grew a %d-byte file to %d allocated bytes (%d apparent)", len(b), allocatedBytes(st), st.Size())
			}
		}
	})
}

// fuzzCheckTimeout bounds one check or repair of a fuzzed image (at most
// 1 MiB): longer is a hang, which the fuzzer then records as a failure.
const fuzzCheckTimeout = 30 * time.Second

// checkWithin runs image.Check and fails t if it does not end in time.
func checkWithin(t *testing.T, n *image.Node, fix image.CheckFix, limit time.Duration) (*image.CheckResult, error) {
	type result struct {
		r   *image.CheckResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := image.Check(n, fix, io.Discard)
		done <- result{r, err}
	}()
	select {
	case res := <-done:
		return res.r, res.err
	case <-time.After(limit):
		t.Fatalf("check (fix %d) did not end within %v", fix, limit)
		return nil, nil
	}
}

// TestCheckMutations is a short deterministic run of what FuzzCheck does:
// sample images with words of their header and tables flipped, cleared or
// overwritten, checked and repaired.
func TestCheckMutations(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	iters := 300
	if testing.Short() {
		iters = 50
	}
	for iter := 0; iter < iters; iter++ {
		name := fuzzSeeds[rng.Intn(len(fuzzSeeds))]
		b := seed(t, name)
		b = append([]byte(nil), b[:min(len(b), 256<<10)]...)
		for k := 0; k < 1+rng.Intn(4); k++ {
			i := rng.Intn(len(b)/8) * 8
			if rng.Intn(3) == 0 {
				i = rng.Intn(512/8) * 8 // the header
			}
			switch rng.Intn(4) {
			case 0:
				b[i+rng.Intn(8)] ^= byte(1 << uint(rng.Intn(8)))
			case 1:
				clear(b[i : i+8])
			case 2:
				b[i+rng.Intn(8)] = byte(rng.Intn(256))
			case 3:
				b[i] ^= 0x80
			}
		}
		path := filepath.Join(t.TempDir(), "img.qcow2")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, fix := range []image.CheckFix{0, image.FixLeaks | image.FixErrors} {
			o := image.OpenOptions{Format: "qcow2", Claim: image.ClaimRead, NoBacking: true, Check: true}
			if fix != 0 {
				o.Writable, o.Claim = true, image.ClaimWrite
			}
			n, err := image.Open(path, o)
			if err != nil {
				continue
			}
			start := time.Now()
			_, _ = image.Check(n, fix, io.Discard)
			n.Close()
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("%s, mutation %d, fix %d: check took %v", name, iter, fix, d)
			}
		}
	}
}
