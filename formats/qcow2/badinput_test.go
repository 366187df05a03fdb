package qcow2

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qimg/image"
)

// seed reads a checked-in sample image (made by qemu-img; see
// testdata/qcow2/README).
func seed(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "qcow2", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openBytes writes b to a file and opens it as qcow2; on success it reads
// the first MiB and walks block status for a while, returning the first
// error.
func openBytes(t testing.TB, b []byte, writable bool) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.qcow2")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return openAndRead(path, writable)
}

func openAndRead(path string, writable bool) error {
	o := image.OpenOptions{Format: "qcow2", Claim: image.ClaimRead, NoBacking: true, Writable: writable}
	if writable {
		o.Claim = image.ClaimWrite
	}
	n, err := image.Open(path, o)
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
	off := int64(0)
	for i := 0; i < 1000 && off < n.Size(); i++ {
		e, err := n.BlockStatus(off, n.Size()-off)
		if err != nil {
			return err
		}
		off = e.End()
	}
	return nil
}

func put32(b []byte, off int, v uint32) { binary.BigEndian.PutUint32(b[off:], v) }
func put64(b []byte, off int, v uint64) { binary.BigEndian.PutUint64(b[off:], v) }
func get64(b []byte, off int) uint64    { return binary.BigEndian.Uint64(b[off:]) }

// firstL2 is the offset of the L2 table of L1 entry 0.
func firstL2(b []byte) int {
	l1 := int(get64(b, offL1TableOffset))
	return int(get64(b, l1) & l1OffsetMask)
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
		want   string
	}{
		{"truncated to 3 bytes", func(b []byte) []byte { return b[:3] }, "not in qcow2 format"},
		// files read as whole sectors: the missing bytes are zeroes
		{"truncated to 50 bytes", func(b []byte) []byte { return b[:50] }, "header too short"},
		{"truncated header", func(b []byte) []byte { return b[:90] }, "header too short"},
		// what lies beyond the end of the file reads as zeroes, as qemu
		// reads it (a truncated image opens read-only)
		{"truncated after the header", func(b []byte) []byte { return b[:4096] }, ""},
		{"cluster_bits 8", func(b []byte) []byte { put32(b, offClusterBits, 8); return b }, "Unsupported cluster size: 2^8"},
		{"cluster_bits 30", func(b []byte) []byte { put32(b, offClusterBits, 30); return b }, "Unsupported cluster size: 2^30"},
		{"version 4", func(b []byte) []byte { put32(b, offVersion, 4); return b }, "Unsupported qcow2 version 4"},
		{"huge l1_size", func(b []byte) []byte { put32(b, offL1Size, 0x10000000); return b }, "L1 table too large"},
		{"l1_size beyond the file", func(b []byte) []byte { put32(b, offL1Size, 1<<20); return b }, ""},
		{"l1_size too small", func(b []byte) []byte { put64(b, offSize, 1<<40); return b }, "L1 table is too small"},
		{"size of 1 EiB", func(b []byte) []byte { put64(b, offSize, 1<<60); return b }, "Image is too big"},
		{"huge refcount table", func(b []byte) []byte { put32(b, offRefcountTableClusters, 0xffffffff); return b }, "Reference count table too large"},
		{"refcount table beyond the file", func(b []byte) []byte { put32(b, offRefcountTableClusters, 1000); return b }, ""},
		{"misaligned L1 table", func(b []byte) []byte { put64(b, offL1TableOffset, get64(b, offL1TableOffset)+8); return b }, "offset invalid"},
		{"backing name of 100 KiB", func(b []byte) []byte {
			put64(b, offBackingFileOffset, 512)
			put32(b, offBackingFileSize, 100<<10)
			return b
		}, "Backing file name too long"},
		{"unknown incompatible bit", func(b []byte) []byte { put64(b, offIncompatibleFeatures, 1<<10); return b }, "Unsupported qcow2 feature(s): Unknown incompatible feature: 400"},
		{"named unknown incompatible bit", func(b []byte) []byte {
			// ext.qcow2's feature table: rename the entry of bit 4 to
			// bit 5, then set bit 5
			b = seed(t, "ext.qcow2")
			b[headerV3Length+8+4*featureEntrySize+1] = 5
			put64(b, offIncompatibleFeatures, 1<<5|incompatExtendedL2|incompatCompression)
			return b
		}, "Unsupported qcow2 feature(s): extended L2 entries"},
		{"header_length beyond the cluster", func(b []byte) []byte { put32(b, offHeaderLength, 8192); return b }, "exceeds cluster size"},
		{"refcount_order 7", func(b []byte) []byte { put32(b, offRefcountOrder, 7); return b }, "Reference count entry width too large"},
		{"L2 table past the end", func(b []byte) []byte {
			put64(b, int(get64(b, offL1TableOffset)), 1<<40|oflagCopied)
			return b
		}, ""},
		{"misaligned L2 table", func(b []byte) []byte {
			l1 := int(get64(b, offL1TableOffset))
			put64(b, l1, get64(b, l1)+512)
			return b
		}, "unaligned"},
		{"data cluster past the end", func(b []byte) []byte {
			put64(b, firstL2(b), 1<<40|oflagCopied)
			return b
		}, ""},
		{"misaligned data cluster", func(b []byte) []byte {
			l2 := firstL2(b)
			put64(b, l2, get64(b, l2)+512)
			return b
		}, "unaligned"},
		{"reserved bits in an L2 entry", func(b []byte) []byte {
			l2 := firstL2(b)
			put64(b, l2, get64(b, l2)|1<<57)
			return b
		}, "reserved bits"},
		{"compressed descriptor out of bounds", func(b []byte) []byte {
			put64(b, firstL2(b), oflagCompressed|(1<<40))
			return b
		}, "Input/output error"},
		{"compressed garbage", func(b []byte) []byte {
			put64(b, firstL2(b), oflagCompressed|4096)
			return b
		}, "Input/output error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mutate(seed(t, "v3-rb1.qcow2"))
			err := openBytes(t, b, false)
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is more than one line: %q", err)
			}
		})
	}
}

// TestTablesBeyondEndReadOnly: an image whose tables lie beyond the end of
// the file opens read-only (they read as zeroes) but not read/write, where
// allocating clusters would overwrite them.
func TestTablesBeyondEndReadOnly(t *testing.T) {
	cases := map[string]func(b []byte) []byte{
		"truncated":      func(b []byte) []byte { return b[:4096] },
		"L1 table":       func(b []byte) []byte { put32(b, offL1Size, 1<<20); return b },
		"refcount table": func(b []byte) []byte { put32(b, offRefcountTableClusters, 1000); return b },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			b := mutate(seed(t, "v3-rb1.qcow2"))
			if err := openBytes(t, b, false); err != nil {
				t.Fatalf("read-only open: %v", err)
			}
			if err := openBytes(t, b, true); err == nil || !strings.Contains(err.Error(), "lies beyond the end of the file") {
				t.Fatalf("read/write open: %v, want a table beyond the end of the file", err)
			}
		})
	}
}

func TestCorruptBitOpensReadOnly(t *testing.T) {
	b := seed(t, "v3-rb1.qcow2")
	put64(b, offIncompatibleFeatures, incompatCorrupt)
	if err := openBytes(t, b, false); err != nil {
		t.Fatalf("read-only open of a corrupt image: %v", err)
	}
	if err := openBytes(t, b, true); err == nil || !strings.Contains(err.Error(), "Image is corrupt; cannot be opened read/write") {
		t.Fatalf("read/write open of a corrupt image: %v", err)
	}
}

func TestSeedsOpen(t *testing.T) {
	for _, name := range []string{"v2.qcow2", "v3-rb1.qcow2", "ext.qcow2", "snap.qcow2", "backing.qcow2"} {
		if err := openBytes(t, seed(t, name), false); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeTestFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMutatedImages opens randomly damaged sample images read-only and
// read/write and reads, writes, zeroes and discards in them: errors are
// expected, panics and hangs are not.
func TestMutatedImages(t *testing.T) {
	rng := rand.New(rand.NewSource(7 + seedOffset))
	n := 400
	if testing.Short() {
		n = 50
	}
	dir := t.TempDir()
	for i := 0; i < n; i++ {
		b := seed(t, fuzzSeeds[i%len(fuzzSeeds)])
		for k := 0; k < 1+rng.Intn(6); k++ {
			pos := rng.Intn(len(b))
			if rng.Intn(2) == 0 {
				pos = rng.Intn(min(len(b), 1024)) // the header more often
			}
			b[pos] = byte(rng.Intn(256))
		}
		path := filepath.Join(dir, fmt.Sprintf("m%d.qcow2", i))
		writeTestFile(t, path, b)
		_ = openAndRead(path, false)
		node, err := image.Open(path, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite, NoBacking: true})
		if err != nil {
			continue
		}
		size := node.Size()
		if size > 0 {
			p := make([]byte, 70000)
			for j := 0; j < 6; j++ {
				off := rng.Int63n(size)
				l := min(int64(len(p)), size-off)
				switch j % 3 {
				case 0:
					node.WriteAt(p[:l], off)
				case 1:
					node.WriteZeroes(off, l, j%2 == 0)
				case 2:
					node.Discard(off, l)
				}
				node.ReadAt(p[:l], off)
			}
		}
		node.Close()
	}
}
