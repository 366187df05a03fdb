package vhdx

import (
	"bytes"
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

const (
	killBlock  = 1 << 20
	killBlocks = 48
)

// TestKillHelper is the writing process of TestKillWhileWriting: it runs
// only when started by it, fills every block of the image with its own
// byte in one write each, and prints "writing" once it has begun.
func TestKillHelper(t *testing.T) {
	img := os.Getenv("QIMG_VHDX_KILL_IMAGE")
	if img == "" {
		t.Skip("helper process of TestKillWhileWriting")
	}
	n, err := image.Open(img, image.OpenOptions{Format: "vhdx", Writable: true, Claim: image.ClaimWrite, NoBacking: true})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	fmt.Println("writing")
	for _, b := range rand.Perm(killBlocks) {
		if _, err := n.WriteAt(bytes.Repeat([]byte{byte(b + 1)}, killBlock), int64(b)*killBlock); err != nil {
			fmt.Println("write:", err)
			os.Exit(3)
		}
	}
	n.Close()
	fmt.Println("done")
}

// TestKillWhileWriting kills a process allocating blocks (SIGKILL) at
// random moments: the image must then be one qemu-img opens (after
// replaying its log, if the kill left one, which qimg replays the same
// way) and checks clean, and every block must read as before (zeroes) or
// as written, never in between.
func TestKillWhileWriting(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	if testing.Short() {
		t.Skip("short")
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	var span time.Duration
	for i := 0; i < 10; i++ {
		img := filepath.Join(t.TempDir(), "img.vhdx")
		createImage(t, img, "block_size=1M", killBlocks*killBlock)
		h := qemutest.StartHelper(t, "TestKillHelper", []string{"QIMG_VHDX_KILL_IMAGE=" + img}, "writing")
		if i == 0 {
			span = h.Finish(t) // the first run measures how long the writes take
			continue
		}
		delay := time.Duration(rng.Int63n(int64(span) + 1))
		h.KillAfter(delay)
		when := fmt.Sprintf("killed after %v of %v", delay, span)
		if out, err := exec.Command("qemu-img", "info", img).CombinedOutput(); err != nil {
			if !strings.Contains(string(out), "needs to be replayed") {
				t.Fatalf("%s: qemu-img info: %s", when, out)
			}
			replayBoth(t, img) // qimg replays it as qemu-img does
			qemutest.Run(t, "qemu-img", "check", "-r", "all", img)
			t.Logf("%s: log replayed", when)
		}
		qemutest.Run(t, "qemu-img", "check", img)
		raw := filepath.Join(t.TempDir(), "raw")
		qemutest.Run(t, "qemu-img", "convert", "-O", "raw", img, raw)
		data, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		for b := 0; b < killBlocks; b++ {
			blk := data[b*killBlock : (b+1)*killBlock]
			if !isZero(blk) && !bytes.Equal(blk, bytes.Repeat([]byte{byte(b + 1)}, killBlock)) {
				t.Fatalf("%s: block %d is neither old nor new", when, b)
			}
		}
	}
}
