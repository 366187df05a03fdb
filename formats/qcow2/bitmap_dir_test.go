package qcow2

import (
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

// TestBitmapDirMutations damages the bitmap directory and tables of an
// image qemu made: listing, loading and storing bitmaps fail with an
// error or succeed, never panic, and a refused store leaves the file as
// it was.
func TestBitmapDirMutations(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.qcow2")
	mustRun(t, "qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4k", orig, "64M")
	mustRun(t, "qemu-img", "bitmap", "--add", orig, "b0")
	mustRun(t, "qemu-img", "bitmap", "--add", "-g", "512", "--disable", orig, "second")
	mustRun(t, "qemu-io", "-c", "write 0 100k", "-c", "write 10M 1M", orig)
	mustRun(t, "qemu-img", "bitmap", "--merge", "b0", orig, "second")
	base := readFile(t, orig)
	h, err := parseHeader(base[:4096])
	if err != nil || h.bitmaps == nil {
		t.Fatalf("header: %v", err)
	}
	dirOff := int(h.bitmaps.directoryOffset)
	dirLen := int(h.bitmaps.directorySize)
	// the table of the first bitmap
	tableOff := int(be.Uint64(base[dirOff:]))
	rng := rand.New(rand.NewSource(3))
	img := filepath.Join(dir, "m.qcow2")
	for iter := 0; iter < 150; iter++ {
		b := append([]byte(nil), base...)
		for k := 1 + rng.Intn(3); k > 0; k-- {
			var at int
			switch rng.Intn(3) {
			case 0:
				at = dirOff + rng.Intn(dirLen)
			case 1:
				at = tableOff + rng.Intn(64)
			default:
				at = dirOff + rng.Intn(24) // the first entry's fixed part
			}
			switch rng.Intn(3) {
			case 0:
				b[at] ^= byte(1 << rng.Intn(8))
			case 1:
				b[at] = 0xff
			default:
				b[at] = byte(rng.Intn(256))
			}
		}
		writeTestFile(t, img, b)
		n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite, Check: true})
		if err != nil {
			continue
		}
		q := n.Driver().(*Image)
		list, err := q.Bitmaps()
		if err == nil {
			set := make([]image.BitmapUpdate, 0, len(list)+1)
			for _, bi := range list {
				if _, err := q.LoadBitmap(bi.Name); err == nil {
					set = append(set, image.BitmapUpdate{BitmapInfo: bi})
				}
			}
			set = append(set, image.BitmapUpdate{
				BitmapInfo: image.BitmapInfo{Name: "new", Granularity: 65536, Enabled: true},
				Data:       image.NewDirtyBitmap(q.size, 65536)})
			before := readFile(t, img)
			if err := q.StoreBitmaps(set); err != nil {
				if string(readFile(t, img)) != string(before) {
					t.Fatalf("iter %d: refused store (%v) changed the file", iter, err)
				}
			}
		}
		n.Close()
		os.Remove(img)
	}
}
