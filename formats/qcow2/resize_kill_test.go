package qcow2

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qimg/image"
	"qimg/internal/qemutest"
)

// resizeKillSizes are the sizes TestResizeKillHelper moves its image
// between: it grows and shrinks across L2 tables and bitmap clusters.
var resizeKillSizes = []int64{40 << 20, 12 << 20, 64 << 20, 9<<20 + 512}

// TestResizeKillHelper is the process TestKillWhileResizing kills: it
// opens the image, resizes it and closes it, over and over.
func TestResizeKillHelper(t *testing.T) {
	img := os.Getenv("QIMG_QCOW2_RESIZE_KILL_IMAGE")
	if img == "" {
		t.Skip("helper process of TestKillWhileResizing")
	}
	fmt.Println("resizing")
	for i := 0; ; i++ {
		n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite})
		if err == nil {
			err = n.Truncate(resizeKillSizes[i%len(resizeKillSizes)], image.PreallocOff)
			if cerr := n.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Println("resize:", err)
			os.Exit(2)
		}
	}
}

// TestKillWhileResizing kills resizes of an image with persistent
// bitmaps at random moments: qemu-img check finds leaks at worst, the
// size is one of those asked for, the guest data is intact, and qemu
// opens the image read/write, its bitmaps either consistent at the
// image's size or marked in use.
func TestKillWhileResizing(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	if testing.Short() {
		t.Skip("short")
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for round := 0; round < 8; round++ {
		img := filepath.Join(t.TempDir(), "img.qcow2")
		createImage(t, img, "cluster_size=4096", 32<<20)
		qemutest.Run(t, "qemu-img", "bitmap", "--add", "-g", "4096", img, "on")
		qemutest.Run(t, "qemu-img", "bitmap", "--add", "--disable", img, "off")
		qemutest.Run(t, "qemu-io", "-c", "write -P 7 0 8M", img)
		h := qemutest.StartHelper(t, "TestResizeKillHelper", []string{"QIMG_QCOW2_RESIZE_KILL_IMAGE=" + img}, "resizing")
		delay := time.Duration(1+rng.Intn(80)) * time.Millisecond
		when := fmt.Sprintf("resizes killed after %v", delay)
		if rest := h.KillAfter(delay); rest != "" {
			t.Fatalf("%s: the helper stopped by itself: %s", when, rest)
		}
		leaks := qemutest.CheckNoCorruption(t, img, when)
		size := imageSize(t, img)
		if size != 32<<20 && !containsSize(resizeKillSizes, size) {
			t.Fatalf("%s: size %d was never asked for", when, size)
		}
		// qemu-io opens read/write: a consistent bitmap of the wrong
		// size would make it refuse the image
		out, err := exec.Command("qemu-io", "-c", "read -P 7 0 8M", img).CombinedOutput()
		if err != nil || strings.Contains(string(out), "failed") {
			t.Fatalf("%s: qemu-io: %v\n%s", when, err, out)
		}
		t.Logf("%s: size %d, %d leaked clusters", when, size, leaks)
	}
}

func containsSize(sizes []int64, s int64) bool {
	for _, v := range sizes {
		if v == s {
			return true
		}
	}
	return false
}

// imageSize is the virtual size qemu-img info reports.
func imageSize(t *testing.T, img string) int64 {
	t.Helper()
	out := qemutest.Run(t, "qemu-img", "info", "-U", "--output=json", img)
	i := strings.Index(out, `"virtual-size": `)
	if i < 0 {
		t.Fatalf("qemu-img info %s: no virtual-size\n%s", img, out)
	}
	var size int64
	fmt.Sscan(out[i+len(`"virtual-size": `):], &size)
	return size
}
