package vdi

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

// vboxImage builds an image laid out as VirtualBox lays them out (its own
// header text and size, data from 0x1000, blocks out of order): 8 blocks,
// block 5 on data block 0 (0x55), block 2 on data block 1 (0x66).
func vboxImage() []byte {
	h := make([]byte, headerSize)
	copy(h, "<<< Oracle VM VirtualBox Disk Image >>>\n")
	le.PutUint32(h[0x40:], signature)
	le.PutUint32(h[0x44:], version11)
	le.PutUint32(h[0x48:], 0x190)
	le.PutUint32(h[0x4c:], typeDynamic)
	le.PutUint32(h[0x154:], 0x200)
	le.PutUint32(h[0x158:], 0x1000)
	le.PutUint32(h[0x168:], sectorSize)
	le.PutUint64(h[0x170:], 8<<20)
	le.PutUint32(h[0x178:], blockSize)
	le.PutUint32(h[0x180:], 8)
	le.PutUint32(h[0x184:], 2)
	copy(h[0x188:], "0123456789abcdef")
	f := make([]byte, 0x1000, 0x1000+2*blockSize)
	copy(f, h)
	for i := 0; i < 8; i++ {
		le.PutUint32(f[0x200+4*i:], unallocated)
	}
	le.PutUint32(f[0x200+4*5:], 0)
	le.PutUint32(f[0x200+4*2:], 1)
	f = append(f, bytes.Repeat([]byte{0x55}, blockSize)...)
	return append(f, bytes.Repeat([]byte{0x66}, blockSize)...)
}

// TestVirtualBoxLayout reads such an image as qemu-img does, and writes
// to it as qemu-io does, byte for byte.
func TestVirtualBoxLayout(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.vdi"), filepath.Join(dir, "b.vdi")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, vboxImage(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := filepath.Join(dir, "want.raw")
	qemutest.Run(t, "qemu-img", "convert", "-f", "vdi", "-O", "raw", a, want)
	wantData, _ := os.ReadFile(want)
	n, err := image.Open(b, image.OpenOptions{Format: "vdi", Claim: image.ClaimWrite, Writable: true, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, n.Size())
	if _, err := n.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantData) {
		t.Fatal("data differs from qemu-img's")
	}
	qemutest.Run(t, "qemu-io", "-f", "vdi", "-c", "write -P 7 7340032 4096", "-c", "write -P 8 2097152 512", a)
	if _, err := n.WriteAt(bytes.Repeat([]byte{7}, 4096), 7<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteAt(bytes.Repeat([]byte{8}, 512), 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Fatal("files differ after the same writes")
	}
	qemutest.CheckNoCorruption(t, b, "after writes")
}
