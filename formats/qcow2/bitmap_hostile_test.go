package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"qimg/internal/qemutest"
)

// TestBitmapTableOverGuestData: a bitmap table entry that points at a
// cluster holding guest data (a hostile or damaged image) must not get
// that cluster freed when the bitmap is removed: the store is refused and
// the file stays byte for byte as it was.
func TestBitmapTableOverGuestData(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	img := filepath.Join(t.TempDir(), "img.qcow2")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
	qemutest.Run(t, "qemu-img", "bitmap", "--add", img, "b0")
	qemutest.Run(t, "qemu-io", "-c", "write -P 0x5a 0 64k", img)

	// where the guest data lives
	out, err := exec.Command("qemu-img", "map", "--output=json", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	var runs []struct {
		Data   bool  `json:"data"`
		Offset int64 `json:"offset"`
	}
	if err := json.Unmarshal(out, &runs); err != nil || len(runs) == 0 || !runs[0].Data {
		t.Fatalf("qemu-img map: %v %s", err, out)
	}
	dataOff := runs[0].Offset

	// point the bitmap's first table entry at the data cluster
	n, q := openBitmaps(t, img)
	dir, err := q.loadBitmapDir()
	n.Close()
	if err != nil || len(dir) != 1 {
		t.Fatalf("bitmap directory: %v (%d entries)", err, len(dir))
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var entry [8]byte
	binary.BigEndian.PutUint64(entry[:], uint64(dataOff))
	if _, err := f.WriteAt(entry[:], int64(dir[0].tableOffset)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}

	n, q = openBitmaps(t, img)
	err = q.StoreBitmaps(nil) // remove every bitmap
	n.Close()
	if err == nil || !strings.Contains(err.Error(), "refcount errors") {
		t.Fatalf("removing a bitmap whose table overlaps guest data: %v, want a refusal", err)
	}
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("the refused removal changed the file")
	}
	qemutest.Run(t, "qemu-io", "-c", "read -P 0x5a 0 64k", img)
}
