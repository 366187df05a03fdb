//go:build linux

package file

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"qimg/image"
)

// loopDevice attaches a loop device over a new file of size bytes with
// the given logical sector size, detached when the test ends. The test is
// skipped where loop devices cannot be set up (not root, no loop driver,
// a container without /dev/loop*).
func loopDevice(t *testing.T, size int64, sector int) (dev, backing string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("losetup not installed")
	}
	backing = filepath.Join(t.TempDir(), "loop.img")
	if err := os.WriteFile(backing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	args := []string{"--find", "--show"}
	if sector != 512 {
		args = append(args, "--sector-size", strconv.Itoa(sector))
	}
	out, err := exec.Command(losetup, append(args, backing)...).CombinedOutput()
	if err != nil {
		t.Skipf("losetup cannot attach a loop device here: %v: %s", err, bytes.TrimSpace(out))
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev, backing
}

// TestBlockDevice opens loop devices with 512- and 4096-byte sectors,
// with and without O_DIRECT, and does unaligned I/O, zeroing and discard.
func TestBlockDevice(t *testing.T) {
	for _, sector := range []int{512, 4096} {
		t.Run(strconv.Itoa(sector), func(t *testing.T) {
			const size = 4 << 20
			dev, backing := loopDevice(t, size, sector)
			r := rand.New(rand.NewPCG(7, uint64(sector)))
			model := make([]byte, size)
			for _, cache := range []string{"writeback", "none", "directsync"} {
				d := openT(t, dev, true, cache)
				if !d.blockDev || d.Size() != size {
					t.Fatalf("%s: block device %v size %d", cache, d.blockDev, d.Size())
				}
				if d.align != 0 && d.align != int64(sector) {
					t.Fatalf("%s: alignment %d, want the sector size %d", cache, d.align, sector)
				}
				for i := 0; i < 40; i++ {
					off := r.Int64N(size - 70000)
					n := r.Int64N(70000) + 1
					p := randBytes(r, int(n))
					if _, err := d.WriteAt(p, off); err != nil {
						t.Fatalf("%s: write [%d,+%d): %v", cache, off, n, err)
					}
					copy(model[off:], p)
					q := make([]byte, n)
					if _, err := d.ReadAt(q, off); err != nil || !bytes.Equal(q, p) {
						t.Fatalf("%s: read back [%d,+%d): %v", cache, off, n, err)
					}
				}
				if err := d.WriteZeroes(8192, 8192, false); err != nil {
					t.Fatal(err)
				}
				clear(model[8192:16384])
				if err := d.WriteZeroes(65536, 65536, true); err != nil {
					t.Fatal(err)
				}
				clear(model[65536:131072])
				if err := d.Flush(); err != nil {
					t.Fatal(err)
				}
				e, err := d.BlockStatus(0, size)
				if err != nil || !e.Data || e.Length != size {
					t.Fatalf("block status of a device: %+v %v", e, err)
				}
				if err := d.Truncate(size+4096, image.PreallocOff); err == nil {
					t.Fatal("a device grew")
				}
				d.Close()
			}
			got, err := os.ReadFile(backing)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model) {
				t.Fatal("device content differs from the model")
			}
		})
	}
}
