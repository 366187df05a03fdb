package qcow2

import (
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

// TestBitmapTracking runs the dirty-tracking hooks as the write path is
// to run them: bitmaps in-use while the image is open, the enabled one
// dirtied, both consistent again after the clean end, as qemu sees it.
func TestBitmapTracking(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	img := filepath.Join(t.TempDir(), "t.qcow2")
	mustRun(t, "qemu-img", "create", "-f", "qcow2", img, "64M")
	mustRun(t, "qemu-img", "bitmap", "--add", img, "b0")
	mustRun(t, "qemu-img", "bitmap", "--add", "--disable", img, "d0")
	mustRun(t, "qemu-io", "-c", "write 0 64k", img)

	n, q := openBitmaps(t, img)
	if err := q.startBitmapTracking(); err != nil {
		t.Fatal(err)
	}
	info, _ := exec.Command("qemu-img", "info", "-U", img).CombinedOutput()
	if strings.Count(string(info), "in-use") != 2 {
		t.Fatalf("open image: bitmaps not in use:\n%s", info)
	}
	q.markBitmapsDirty(5<<20, 1024)
	q.markBitmapsDirty(63<<20, 2<<20) // clipped to the size
	if err := q.finishBitmapTracking(); err != nil {
		t.Fatal(err)
	}
	n.Close()
	qemuCheck(t, img)
	info, _ = exec.Command("qemu-img", "info", img).CombinedOutput()
	if strings.Contains(string(info), "in-use") {
		t.Fatalf("closed image: bitmaps in use:\n%s", info)
	}

	n, q = openBitmaps(t, img)
	defer n.Close()
	b0, err := q.LoadBitmap("b0")
	if err != nil {
		t.Fatal(err)
	}
	want := []image.DirtyExtent{{Offset: 0, Length: 64 << 10}, {Offset: 5 << 20, Length: 64 << 10}, {Offset: 63 << 20, Length: 1 << 20}}
	if got := b0.Extents(); !reflect.DeepEqual(got, want) {
		t.Fatalf("b0: got %v want %v", got, want)
	}
	d0, err := q.LoadBitmap("d0")
	if err != nil {
		t.Fatal(err)
	}
	if !d0.Empty() {
		t.Fatalf("disabled d0 dirtied: %v", d0.Extents())
	}
}
