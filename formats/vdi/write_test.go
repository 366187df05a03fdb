package vdi

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	_ "qimg/formats/file"
	"qimg/image"
	"qimg/internal/qemutest"
)

// TestWriteLikeQemu makes the same writes with qemu-io and with the
// driver on two copies of one image: the files must stay byte-identical
// (allocation order, zero padding, header and block map sectors).
func TestWriteLikeQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.vdi"), filepath.Join(dir, "b.vdi")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "vdi", a, "300M")
	copyFile(t, a, b)
	writes := []struct {
		pattern byte
		off, n  int64
	}{
		{0x77, 1 << 20, 8 << 10},            // a new block, zero-padded
		{0x78, 200 << 20, 512},              // far away: block map sector 0
		{0x79, 1<<20 + 4000, 2000},          // into an allocated block
		{0x7a, 3<<20 - 100, 200},            // across two new blocks
		{0x7b, 0, 5 << 20},                  // mixed, over several blocks
		{0x7c, 299<<20 + 1000, 100},         // the last block
		{0x7d, 130<<20 - 512, 1<<20 + 1024}, // entries in two map sectors
	}
	n, err := image.Open(b, image.OpenOptions{Format: "vdi", Claim: image.ClaimWrite, Writable: true, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range writes {
		qemutest.Run(t, "qemu-io", "-f", "vdi", "-c", "write -P "+itoa(int64(w.pattern))+" "+itoa(w.off)+" "+itoa(w.n), a)
		if _, err := n.WriteAt(bytes.Repeat([]byte{w.pattern}, int(w.n)), w.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Fatalf("files differ: qemu %d bytes, qimg %d bytes", len(ab), len(bb))
	}
	qemutest.CheckNoCorruption(t, b, "after writes")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestWriteRefusesFullCount: with the header's allocation count already
// at the block count, a new block would land past the data area that the
// block map can address; the write fails and the file is left as it was.
func TestWriteRefusesFullCount(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	path := filepath.Join(t.TempDir(), "full.vdi")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "vdi", path, "2M")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le.PutUint32(b[0x184:], 2)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := image.Open(path, image.OpenOptions{Format: "vdi", Claim: image.ClaimWrite, Writable: true, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = n.WriteAt([]byte{1}, 0)
	n.Close()
	if err == nil || !strings.Contains(err.Error(), "allocated block count 2 is not below the block count 2") {
		t.Fatalf("write: %v", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, b) {
		t.Fatal("the refused write changed the file")
	}
}

// TestWriteRefusesOverlap: a map whose entries skip a block (0 and 2 in
// use, count 2) passes qemu's check, but qemu would allocate the next
// block over block 2; the driver refuses the write and changes nothing.
func TestWriteRefusesOverlap(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	path := filepath.Join(t.TempDir(), "gap.vdi")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "vdi", path, "4M")
	qemutest.Run(t, "qemu-io", "-f", "vdi", "-c", "write -P 1 0 4k", "-c", "write -P 2 1M 4k", "-c", "write -P 3 2M 4k", path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le.PutUint32(b[0x184:], 2)            // two blocks allocated
	le.PutUint32(b[0x200+4:], 0xffffffff) // block 1 unallocated: data blocks 0 and 2 used
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "check", path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check: %v\n%s", err, out)
	}
	n, err := image.Open(path, image.OpenOptions{Format: "vdi", Claim: image.ClaimWrite, Writable: true, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = n.WriteAt([]byte{9}, 1<<20)
	n.Close()
	if err == nil || !strings.Contains(err.Error(), "is below a block in use (2)") {
		t.Fatalf("write: %v", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, b) {
		t.Fatal("the refused write changed the file")
	}
}
