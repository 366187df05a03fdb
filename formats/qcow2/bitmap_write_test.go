package qcow2

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"qimg/image"
	"qimg/internal/qemutest"
)

// openBitmaps opens an image the way qimg bitmap does.
func openBitmaps(t testing.TB, path string) (*image.Node, *Image) {
	t.Helper()
	n, err := image.Open(path, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite, Check: true})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return n, n.Driver().(*Image)
}

// bitmapPattern is the content the tests give bitmap "x": every third
// 64 KiB of the first quarter, and the last byte.
func bitmapPattern(size int64) *image.DirtyBitmap {
	b := image.NewDirtyBitmap(size, 65536)
	for off := int64(0); off < size/4; off += 3 * 65536 {
		b.Set(off, 65536)
	}
	b.Set(size-1, 1)
	return b
}

func TestStoreBitmapsRoundTrip(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	img := filepath.Join(dir, "a.qcow2")
	mustRun(t, "qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4k", img, "300M")
	mustRun(t, "qemu-img", "bitmap", "--add", "-g", "64k", img, "b0")
	mustRun(t, "qemu-io", "-c", "write 1M 200k", img)
	n, q := openBitmaps(t, img)
	want := bitmapPattern(q.size)
	set := []image.BitmapUpdate{
		{BitmapInfo: image.BitmapInfo{Name: "b0", Granularity: 65536, Enabled: false}},
		{BitmapInfo: image.BitmapInfo{Name: "x", Granularity: 65536, Enabled: true}, Data: want},
	}
	if err := q.StoreBitmaps(set); err != nil {
		t.Fatal(err)
	}
	n.Close()
	qemuCheck(t, img)
	n, q = openBitmaps(t, img)
	defer n.Close()
	got, err := q.LoadBitmap("x")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Extents(), want.Extents()) {
		t.Fatalf("x: got %v want %v", got.Extents(), want.Extents())
	}
	b0, err := q.LoadBitmap("b0")
	if err != nil {
		t.Fatal(err)
	}
	if e := b0.Extents(); len(e) != 1 || e[0] != (image.DirtyExtent{Offset: 1 << 20, Length: 256 << 10}) {
		t.Fatalf("b0: %v", e)
	}
	// a refused set changes nothing
	before := readFile(t, img)
	bad := append(set, image.BitmapUpdate{BitmapInfo: image.BitmapInfo{Name: "x", Granularity: 65536}, Data: want})
	if err := q.StoreBitmaps(bad); err == nil {
		t.Fatal("duplicate name accepted")
	}
	bad = []image.BitmapUpdate{{BitmapInfo: image.BitmapInfo{Name: "y", Granularity: 1000}, Data: want}}
	if err := q.StoreBitmaps(bad); err == nil {
		t.Fatal("granularity 1000 accepted")
	}
	if string(readFile(t, img)) != string(before) {
		t.Fatal("a refused set changed the image")
	}
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// TestBitmapKillHelper is the process TestKillWhileStoringBitmaps kills:
// it switches the image between two sets of bitmaps until it dies.
func TestBitmapKillHelper(t *testing.T) {
	img := os.Getenv("QIMG_QCOW2_BITMAP_KILL_IMAGE")
	if img == "" {
		t.Skip("helper process of TestKillWhileStoringBitmaps")
	}
	n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite, Check: true})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	q := n.Driver().(*Image)
	keep := image.BitmapUpdate{BitmapInfo: image.BitmapInfo{Name: "b0", Granularity: 65536, Enabled: true}}
	x := image.BitmapUpdate{BitmapInfo: image.BitmapInfo{Name: "x", Granularity: 65536}, Data: bitmapPattern(q.size)}
	fmt.Println("storing")
	for i := 0; ; i++ {
		set := []image.BitmapUpdate{keep}
		if i%2 == 0 {
			set = append(set, x)
		}
		if err := q.StoreBitmaps(set); err != nil {
			fmt.Println("store:", err)
			os.Exit(2)
		}
	}
}

// TestKillWhileStoringBitmaps kills a process in the middle of bitmap
// transactions: qemu-img check finds leaks at worst, and the image holds
// either the old or the new set, with intact bits.
func TestKillWhileStoringBitmaps(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "k.qcow2")
	mustRun(t, "qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4k", img, "200M")
	mustRun(t, "qemu-img", "bitmap", "--add", "-g", "64k", img, "b0")
	mustRun(t, "qemu-io", "-c", "write 0 300k", img)
	rng := rand.New(rand.NewSource(7))
	size := int64(200 << 20)
	for round := 0; round < 8; round++ {
		h := qemutest.StartHelper(t, "TestBitmapKillHelper", []string{"QIMG_QCOW2_BITMAP_KILL_IMAGE=" + img}, "storing")
		time.Sleep(time.Duration(1+rng.Intn(30)) * time.Millisecond)
		h.Kill()

		res, _ := exec.Command("qemu-img", "check", "--output=json", img).Output()
		var r struct {
			Corruptions int64 `json:"corruptions"`
			CheckErrors int64 `json:"check-errors"`
		}
		if err := json.Unmarshal(res, &r); err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
			human, _ := exec.Command("qemu-img", "check", img).CombinedOutput()
			t.Fatalf("round %d: qemu-img check: %v\n%s", round, err, human)
		}
		n, q := openBitmaps(t, img)
		list, err := q.Bitmaps()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(list) < 1 || len(list) > 2 || list[0].Name != "b0" || len(list) == 2 && list[1].Name != "x" {
			t.Fatalf("round %d: bitmaps %v", round, list)
		}
		if len(list) == 2 {
			got, err := q.LoadBitmap("x")
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if want := bitmapPattern(size).Extents(); !reflect.DeepEqual(got.Extents(), want) {
				t.Fatalf("round %d: x holds %v", round, got.Extents())
			}
		}
		b0, err := q.LoadBitmap("b0")
		if err != nil {
			t.Fatalf("round %d: b0: %v", round, err)
		}
		if e := b0.Extents(); len(e) != 1 || e[0].Length != 320<<10 {
			t.Fatalf("round %d: b0 holds %v", round, e)
		}
		n.Close()
		t.Logf("round %d: %d bitmaps", round, len(list))
	}
	qemuCheckLeaksOK(t, img)
}

// qemuCheckLeaksOK repairs the leaks a kill leaves and checks again.
func qemuCheckLeaksOK(t *testing.T, img string) {
	t.Helper()
	exec.Command("qemu-img", "check", "-r", "leaks", img).Run()
	qemuCheck(t, img)
}
