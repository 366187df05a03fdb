package vpc

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"qimg/image"
	"qimg/internal/qemutest"
)

// sectorPattern is what the kill helper writes into the sector at off:
// a byte no other nearby sector has, never zero.
func sectorPattern(off int64) byte { return byte(off/512%255) + 1 }

// TestKillHelper is the writing process of TestKillWhileWriting: it runs
// only when started by it (QIMG_VPC_KILL_IMAGE set), writes the sector
// pattern at random places until it is killed, and prints "writing" once
// it has begun.
func TestKillHelper(t *testing.T) {
	img := os.Getenv("QIMG_VPC_KILL_IMAGE")
	if img == "" {
		t.Skip("helper process of TestKillWhileWriting")
	}
	seed, _ := strconv.ParseInt(os.Getenv("QIMG_VPC_KILL_SEED"), 10, 64)
	n, err := image.Open(img, image.OpenOptions{Format: "vpc", Writable: true, Claim: image.ClaimWrite})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	rng := rand.New(rand.NewSource(seed))
	sectors := n.Size() / 512
	fmt.Println("writing")
	for {
		first := rng.Int63n(sectors)
		count := min(sectors-first, 1+rng.Int63n(5000))
		buf := make([]byte, count*512)
		for i := int64(0); i < count; i++ {
			s := buf[i*512 : (i+1)*512]
			for j := range s {
				s[j] = sectorPattern((first + i) * 512)
			}
		}
		if _, err := n.WriteAt(buf, first*512); err != nil {
			fmt.Println("write:", err)
			os.Exit(3)
		}
	}
}

// TestKillWhileWriting kills a process writing a dynamic image (SIGKILL)
// at random moments: qemu-img must then open it, and every sector must
// read as zeroes or as what was written there.
func TestKillWhileWriting(t *testing.T) {
	qemuImg := qemutest.Need(t, "qemu-img")
	if testing.Short() {
		t.Skip("short")
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for i := 0; i < 8; i++ {
		dir := t.TempDir()
		img := filepath.Join(dir, "img.vhd")
		qemutest.Run(t, qemuImg, "create", "-q", "-f", "vpc", img, "64M")
		h := qemutest.StartHelper(t, "TestKillHelper",
			[]string{"QIMG_VPC_KILL_IMAGE=" + img, fmt.Sprintf("QIMG_VPC_KILL_SEED=%d", i)}, "writing")
		delay := time.Duration(5+rng.Intn(150)) * time.Millisecond
		time.Sleep(delay)
		h.Kill()
		raw := filepath.Join(dir, "img.raw")
		if out, err := exec.Command(qemuImg, "convert", "-f", "vpc", "-O", "raw", img, raw).CombinedOutput(); err != nil {
			t.Fatalf("killed after %v: qemu-img convert: %v\n%s", delay, err, out)
		}
		checkSectors(t, raw, delay)
	}
}

func checkSectors(t *testing.T, raw string, delay time.Duration) {
	t.Helper()
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 512)
	written := 0
	for off := 0; off+512 <= len(b); off += 512 {
		s := b[off : off+512]
		if bytes.Equal(s, zero) {
			continue
		}
		if !bytes.Equal(s, bytes.Repeat([]byte{sectorPattern(int64(off))}, 512)) {
			t.Fatalf("killed after %v: sector at %d holds neither zeroes nor its data", delay, off)
		}
		written++
	}
	t.Logf("killed after %v: %d sectors written", delay, written)
}
