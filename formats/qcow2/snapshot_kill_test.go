package qcow2

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"qimg/image"
	"qimg/internal/qemutest"
)

// TestSnapshotKillHelper is the process TestKillWhileSnapshotting kills:
// it creates snapshots, one after another, until it is killed.
func TestSnapshotKillHelper(t *testing.T) {
	img := os.Getenv("QIMG_QCOW2_SNAPSHOT_KILL_IMAGE")
	if img == "" {
		t.Skip("helper process of TestKillWhileSnapshotting")
	}
	n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	q := n.Driver().(*Image)
	fmt.Println("snapshotting")
	for i := 0; ; i++ {
		if err := q.CreateSnapshot(fmt.Sprintf("s%d", i)); err != nil {
			fmt.Println("snapshot:", err)
			os.Exit(2)
		}
	}
}

// TestKillWhileSnapshotting kills snapshot creation at random moments:
// qemu-img check finds leaks at worst, and the guest data is intact.
func TestKillWhileSnapshotting(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	if testing.Short() {
		t.Skip("short")
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for round := 0; round < 8; round++ {
		img := filepath.Join(t.TempDir(), "img.qcow2")
		createImage(t, img, "cluster_size=4096", 32<<20)
		qemutest.Run(t, "qemu-io", "-c", "write -P 7 0 8M", "-c", "write -P 8 20M 1M", img)
		h := qemutest.StartHelper(t, "TestSnapshotKillHelper", []string{"QIMG_QCOW2_SNAPSHOT_KILL_IMAGE=" + img}, "snapshotting")
		delay := time.Duration(1+rng.Intn(60)) * time.Millisecond
		time.Sleep(delay)
		h.Kill()
		when := fmt.Sprintf("snapshots killed after %v", delay)
		leaks := qemutest.CheckNoCorruption(t, img, when)
		qemutest.Run(t, "qemu-io", "-c", "read -P 7 0 8M", "-c", "read -P 8 20M 1M", img)
		t.Logf("%s: %d leaked clusters", when, leaks)
	}
}
