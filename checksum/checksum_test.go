package checksum_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"qimg/checksum"
	_ "qimg/formats/file"
	_ "qimg/formats/qcow2"
	_ "qimg/formats/raw"
	"qimg/image"
)

// reference is blkhash's construction done the plain way: every byte
// read, every block hashed, no zero detection, no parallelism.
func reference(data []byte) string {
	outer := sha256.New()
	for off := 0; off < len(data); off += checksum.BlockSize {
		d := sha256.Sum256(data[off:min(off+checksum.BlockSize, len(data))])
		outer.Write(d[:])
	}
	var length [8]byte
	binary.LittleEndian.PutUint64(length[:], uint64(len(data)))
	outer.Write(length[:])
	return hex.EncodeToString(outer.Sum(nil))
}

// writeRaw writes data as a raw image, leaving its all-zero 64 KiB blocks
// as holes so that block status reports them as zeroes.
func writeRaw(t testing.TB, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off := 0; off < len(data); off += checksum.BlockSize {
		block := data[off:min(off+checksum.BlockSize, len(data))]
		if image.IsZero(block) {
			continue
		}
		if _, err := f.WriteAt(block, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	return path
}

func sum(t testing.TB, path string, o checksum.Options) string {
	t.Helper()
	n, err := image.Open(path, image.OpenOptions{Format: "raw", Claim: image.ClaimRead})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	d, err := checksum.Sum(context.Background(), n, o)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(d)
}

// The answers blksum gives (raw images are seen in whole sectors, as
// qemu sees them: 1000 bytes read as 1024).
func TestKnownAnswers(t *testing.T) {
	tenMiB := make([]byte, 10<<20)
	tenMiB[65535], tenMiB[65536] = 1, 1
	for i := 9 << 20; i < 10<<20; i++ {
		tenMiB[i] = 0xff
	}
	ab := make([]byte, 1000)
	for i := range ab {
		ab[i] = 0xab
	}
	for _, tc := range []struct {
		name string
		path string
		want string
	}{
		{"1 GiB of zeroes", sparseFile(t, 1<<30), "c6d6562c3074a2caa0ceea3e1f460f3af678c792ed05e64157eb51e68ae5260d"},
		{"1000 bytes of 0xab", writeRaw(t, ab), "d01a418a0789f0464585f1395bd6173b7e3c0f25355bb8093084d569ad14327f"},
		{"empty", writeRaw(t, nil), "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"},
		{"10 MiB, data at 64k-1 and 9M", writeRaw(t, tenMiB), "da0929d5424bf3bd4222b4782f70471b89b20e8d799eccc03e12f0baa7cd7076"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sum(t, tc.path, checksum.Options{}); got != tc.want {
				t.Errorf("checksum %s, want %s", got, tc.want)
			}
		})
	}
}

func sparseFile(t testing.TB, size int64) string {
	path := filepath.Join(t.TempDir(), "sparse.raw")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

// randomImage makes size bytes (a multiple of 512, as raw images are
// seen) of runs of data, zeroes and holes.
func randomImage(r *rand.Rand, size int) []byte {
	data := make([]byte, size)
	for off := 0; off < size; {
		n := min(size-off, 1+r.IntN(3*checksum.BlockSize))
		switch r.IntN(3) {
		case 0:
			for i := off; i < off+n; i++ {
				data[i] = byte(r.IntN(256))
			}
		case 1:
			data[off] = 1 // a lone byte in a block of zeroes
		}
		off += n
	}
	return data
}

// Sizes around block and batch boundaries, any worker count, agree with
// the plain construction.
func TestAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	sizes := []int{512, 65024, 65536, 66048, 131072, 1 << 20, 1<<20 + 512, 3<<20 - 512, 5 << 20}
	for _, size := range sizes {
		data := randomImage(r, size)
		path := writeRaw(t, data)
		want := reference(data)
		for _, workers := range []int{1, 3, 8} {
			if got := sum(t, path, checksum.Options{Workers: workers}); got != want {
				t.Errorf("size %d, %d workers: checksum %s, want %s", size, workers, got, want)
			}
		}
	}
}

func TestProgressInOrder(t *testing.T) {
	data := randomImage(rand.New(rand.NewPCG(3, 4)), 7<<20)
	path := writeRaw(t, data)
	var last int64
	sum(t, path, checksum.Options{Workers: 4, Progress: func(done, total int64) {
		if done < last || done > total || total != int64(len(data)) {
			t.Errorf("progress %d of %d after %d", done, total, last)
		}
		last = done
	}})
	if last != int64(len(data)) {
		t.Errorf("progress ended at %d of %d", last, len(data))
	}
}

func TestDigests(t *testing.T) {
	data := randomImage(rand.New(rand.NewPCG(5, 6)), 300<<10)
	path := writeRaw(t, data)
	seen := map[string]string{}
	for _, name := range checksum.Digests() {
		got := sum(t, path, checksum.Options{Digest: name})
		if other, ok := seen[got]; ok {
			t.Errorf("%s and %s give the same checksum", name, other)
		}
		seen[got] = name
	}
	if _, err := checksum.Digest("sha257"); !errors.Is(err, checksum.ErrUnknownDigest) {
		t.Errorf("sha257: %v, want ErrUnknownDigest", err)
	}
}

// FuzzChecksum: any content and size agrees with the plain construction.
func FuzzChecksum(f *testing.F) {
	f.Add([]byte{1, 2, 3}, uint32(65536), uint8(2))
	f.Add([]byte{0}, uint32(1<<20+512), uint8(1))
	f.Fuzz(func(t *testing.T, seed []byte, size uint32, workers uint8) {
		size = size % (4 << 20) / 512 * 512
		data := make([]byte, size)
		for i := range seed {
			if len(data) > 0 {
				data[(i*7919)%len(data)] = seed[i]
			}
		}
		path := writeRaw(t, data)
		if got, want := sum(t, path, checksum.Options{Workers: int(workers%8) + 1}), reference(data); got != want {
			t.Errorf("size %d: checksum %s, want %s", size, got, want)
		}
	})
}

func BenchmarkChecksumData(b *testing.B) {
	data := randomImage(rand.New(rand.NewPCG(7, 8)), 64<<20)
	path := writeRaw(b, data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sum(b, path, checksum.Options{})
	}
}
