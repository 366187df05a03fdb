package qcow2

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"qimg/image"
	"qimg/internal/qemutest"
)

// TestKillHelper is the writing process of TestKillWhileWriting: it runs
// only when started by it (QIMG_QCOW2_KILL_IMAGE set), writes into the
// image until it is killed, and prints "writing" once it has begun.
func TestKillHelper(t *testing.T) {
	img := os.Getenv("QIMG_QCOW2_KILL_IMAGE")
	if img == "" {
		t.Skip("helper process of TestKillWhileWriting")
	}
	seed, _ := strconv.ParseInt(os.Getenv("QIMG_QCOW2_KILL_SEED"), 10, 64)
	n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	q := n.Driver().(*Image)
	cs := q.clusterSize
	size := n.Size()
	rng := rand.New(rand.NewSource(seed))
	buf := make([]byte, 4*cs+10000)
	for i := range buf {
		buf[i] = byte(i)
	}
	fmt.Println("writing")
	for i := 0; ; i++ {
		off := rng.Int63n(size)
		length := min(size-off, 1+rng.Int63n(int64(len(buf))))
		switch rng.Intn(8) {
		case 0:
			err = n.WriteZeroes(off, length, rng.Intn(2) == 0)
		case 1:
			err = n.Discard(off, length)
		case 2:
			off &^= cs - 1
			z, cerr := q.CompressCluster(nil, buf[:min(cs, size-off)])
			if cerr == nil && z != nil && q.data == nil {
				err = n.WriteCompressed(off, z)
			}
		default:
			_, err = n.WriteAt(buf[:length], off)
		}
		if err == nil && rng.Intn(3) == 0 {
			// flushes write the pending tables: kills land in them too
			err = n.Flush()
		}
		if err != nil {
			fmt.Println("write:", err)
			os.Exit(3)
		}
	}
}

// TestKillWhileWriting kills a process writing an image (SIGKILL) at
// random moments; qemu-img check must then find no corruption (leaked
// clusters are allowed).
func TestKillWhileWriting(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	if testing.Short() {
		t.Skip("short")
	}
	cases := []struct{ opts string }{
		{"cluster_size=4096"},
		{"cluster_size=512,refcount_bits=2"},
		{"extended_l2=on,cluster_size=16k"},
		{"compat=0.10,cluster_size=4096"},
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for i := 0; i < 12; i++ {
		c := cases[i%len(cases)]
		dir := t.TempDir()
		img := filepath.Join(dir, "img.qcow2")
		createImage(t, img, c.opts, 8<<20)
		h := qemutest.StartHelper(t, "TestKillHelper",
			[]string{"QIMG_QCOW2_KILL_IMAGE=" + img, fmt.Sprintf("QIMG_QCOW2_KILL_SEED=%d", i)}, "writing")
		delay := time.Duration(5+rng.Intn(150)) * time.Millisecond
		time.Sleep(delay)
		h.Kill()
		leaks := qemutest.CheckNoCorruption(t, img, fmt.Sprintf("%s killed after %v", c.opts, delay))
		t.Logf("%s killed after %v: %d leaked clusters", c.opts, delay, leaks)
	}
}
