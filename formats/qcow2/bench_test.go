package qcow2

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"qimg/create"
	"qimg/image"
	"qimg/internal/qemutest"
)

// benchSize is the image size of the read benchmarks
// (QIMG_BENCH_SIZE, in MiB; 128 by default).
func benchSize() int64 {
	n := int64(128)
	fmt.Sscan(os.Getenv("QIMG_BENCH_SIZE"), &n)
	return n << 20
}

var benchImages struct {
	once      sync.Once
	dir       string
	qcow2, rw string
	err       error
}

// benchFiles makes a fully allocated qcow2 image (written through the
// driver) and a raw file with the same bytes, once per test binary.
func benchFiles(b *testing.B) (qcow2, raw string) {
	benchImages.once.Do(func() {
		dir, err := os.MkdirTemp("", "qimg-bench")
		if err != nil {
			benchImages.err = err
			return
		}
		benchImages.dir = dir
		size := benchSize()
		q := filepath.Join(dir, "img.qcow2")
		r := filepath.Join(dir, "img.raw")
		createImage(b, q, "", size)
		n, err := image.Open(q, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite})
		if err != nil {
			benchImages.err = err
			return
		}
		f, err := os.Create(r)
		if err != nil {
			benchImages.err = err
			return
		}
		buf := make([]byte, 1<<20)
		rng := rand.New(rand.NewSource(1))
		for off := int64(0); off < size; off += int64(len(buf)) {
			rng.Read(buf)
			if _, err := n.WriteAt(buf, off); err != nil {
				benchImages.err = err
				return
			}
			if _, err := f.WriteAt(buf, off); err != nil {
				benchImages.err = err
				return
			}
		}
		f.Close()
		benchImages.err = n.Close()
		benchImages.qcow2, benchImages.rw = q, r
	})
	if benchImages.err != nil {
		b.Fatal(benchImages.err)
	}
	return benchImages.qcow2, benchImages.rw
}

func benchSeqRead(b *testing.B, path, format string) {
	n, err := image.Open(path, image.OpenOptions{Format: format, Claim: image.ClaimRead})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	buf := make([]byte, 2<<20)
	size := n.Size()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := n.ReadAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkSeqRead compares reading a fully allocated qcow2 image through
// the driver with reading the same bytes from a raw file (goal: qcow2 at
// 80% of raw or better).
func BenchmarkSeqRead(b *testing.B) {
	q, r := benchFiles(b)
	b.Run("qcow2", func(b *testing.B) { benchSeqRead(b, q, "qcow2") })
	b.Run("raw", func(b *testing.B) { benchSeqRead(b, r, "raw") })
}

// BenchmarkRandomRead4K reads 4 KiB blocks at random offsets once the L2
// tables are cached: one pread each, as for raw.
func BenchmarkRandomRead4K(b *testing.B) {
	q, r := benchFiles(b)
	for _, c := range []struct{ path, format string }{{q, "qcow2"}, {r, "raw"}} {
		b.Run(c.format, func(b *testing.B) {
			n, err := image.Open(c.path, image.OpenOptions{Format: c.format, Claim: image.ClaimRead})
			if err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			buf := make([]byte, 4096)
			blocks := n.Size() / 4096
			for off := int64(0); off < n.Size(); off += 1 << 20 { // warm the L2 cache
				n.ReadAt(buf, off)
			}
			rng := rand.New(rand.NewSource(2))
			b.SetBytes(4096)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := n.ReadAt(buf, rng.Int63n(blocks)*4096); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCreatePreallocMetadata1T creates a 1 TiB image with
// preallocation=metadata with qimg and with qemu-img.
func BenchmarkCreatePreallocMetadata1T(b *testing.B) {
	dir := b.TempDir()
	b.Run("qimg", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			p := filepath.Join(dir, fmt.Sprintf("q%d.qcow2", i))
			createImage(b, p, "preallocation=metadata", 1<<40)
			os.Remove(p)
		}
	})
	b.Run("qemu-img", func(b *testing.B) {
		if _, err := exec.LookPath("qemu-img"); err != nil {
			b.Skip("qemu-img not found")
		}
		for i := 0; i < b.N; i++ {
			p := filepath.Join(dir, fmt.Sprintf("e%d.qcow2", i))
			qemutest.Run(b, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", p, "1T")
			os.Remove(p)
		}
	})
}

// TestMain removes the benchmark images.
func TestMain(m *testing.M) {
	code := m.Run()
	if benchImages.dir != "" {
		os.RemoveAll(benchImages.dir)
	}
	os.Exit(code)
}

// BenchmarkSeqWrite writes a new image from start to end in 1 MiB
// requests from four goroutines (as the copy engine does), then closes
// it, against the same writes to a raw file.
func BenchmarkSeqWrite(b *testing.B) {
	size := benchSize()
	for _, format := range []string{"qcow2", "raw"} {
		b.Run(format, func(b *testing.B) {
			dir := b.TempDir()
			buf := make([]byte, 1<<20)
			rand.New(rand.NewSource(3)).Read(buf)
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				p := filepath.Join(dir, fmt.Sprintf("w%d.%s", i, format))
				o, _ := image.ParseOptions("")
				req := create.Request{Filename: p, Format: format, Size: size, Options: o}
				pr, err := create.Prepare(req)
				if err != nil {
					b.Fatal(err)
				}
				if err := pr.Run(); err != nil {
					b.Fatal(err)
				}
				n, err := image.Open(p, image.OpenOptions{Format: format, Writable: true, Claim: image.ClaimWrite})
				if err != nil {
					b.Fatal(err)
				}
				var wg sync.WaitGroup
				var next int64
				var mu sync.Mutex
				for w := 0; w < 4; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							mu.Lock()
							off := next
							next += int64(len(buf))
							mu.Unlock()
							if off >= size {
								return
							}
							if _, err := n.WriteAt(buf, off); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				if err := n.Close(); err != nil {
					b.Fatal(err)
				}
				os.Remove(p)
			}
		})
	}
}
