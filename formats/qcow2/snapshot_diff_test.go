package qcow2

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"qimg/image"
	"qimg/internal/qemutest"
)

// TestSnapshotOpsMatchQemu runs random sequences of guest writes, resizes,
// bitmaps added and removed, and snapshot creates, applies and deletes on
// twin images, the snapshot
// operations by qemu-img on one and by qimg on the other, and compares
// after every step: which operations fail, the snapshot tables (ids and
// names), the guest views, and qemu-img check of qimg's twin. At the end
// every snapshot of both twins is converted and compared. The seed is
// logged; QIMG_SNAPSHOT_DIFF_SEED replays one, QIMG_SNAPSHOT_DIFF_STEPS
// runs longer.
func TestSnapshotOpsMatchQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	seed := time.Now().UnixNano()
	if s := os.Getenv("QIMG_SNAPSHOT_DIFF_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	steps := 40
	if testing.Short() {
		steps = 12
	}
	if s := os.Getenv("QIMG_SNAPSHOT_DIFF_STEPS"); s != "" {
		steps, _ = strconv.Atoi(s)
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	dir := t.TempDir()
	qemuImg, qimgImg := filepath.Join(dir, "qemu.qcow2"), filepath.Join(dir, "qimg.qcow2")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", qemuImg, "4M")
	qemutest.Run(t, "cp", qemuImg, qimgImg)
	names := []string{"a", "b", "1", "2", "3"}
	size := int64(4 << 20)
	var log []string
	for step := 0; step < steps; step++ {
		var op string
		switch k := rng.Intn(10); {
		case k < 3:
			off := rng.Int63n(size/4096) * 4096
			n := min(size-off, (1+rng.Int63n(64))*4096)
			op = fmt.Sprintf("write -P %d %d %d", 1+rng.Intn(250), off, n)
			for _, img := range []string{qemuImg, qimgImg} {
				qemutest.Run(t, "qemu-io", "-c", op, img)
			}
		case k < 4:
			size = int64(1+rng.Intn(12)) << 19
			op = fmt.Sprintf("resize %d", size)
			for _, img := range []string{qemuImg, qimgImg} {
				qemutest.Run(t, "qemu-img", "resize", "-q", "--shrink", img, strconv.FormatInt(size, 10))
			}
		case k < 5:
			// a persistent bitmap, added or removed: -a refuses while one
			// is there
			action := "--add"
			if strings.Contains(qemutest.Run(t, "qemu-img", "info", qemuImg), "bitmaps:") {
				action = "--remove"
			}
			op = "bitmap " + action
			for _, img := range []string{qemuImg, qimgImg} {
				qemutest.Run(t, "qemu-img", "bitmap", action, img, "bm")
			}
		default:
			flag := []string{"-c", "-c", "-a", "-d"}[rng.Intn(4)]
			name := names[rng.Intn(len(names))]
			op = "snapshot " + flag + " " + name
			want := exec.Command("qemu-img", "snapshot", flag, name, qemuImg).Run() == nil
			got := qimgSnapshot(t, qimgImg, flag, name) == nil
			if got != want {
				t.Fatalf("seed %d, after %v: %s: qimg ok=%v, qemu-img ok=%v", seed, log, op, got, want)
			}
		}
		log = append(log, op)
		// qemu-img resize leaves the size that the snapshot applied
		size = virtualSize(t, qimgImg)
		compareTwins(t, qemuImg, qimgImg, fmt.Sprintf("seed %d, after %v", seed, log))
	}
	for _, id := range snapshotIDs(t, qemuImg) {
		var raws []string
		for _, img := range []string{qemuImg, qimgImg} {
			raw := filepath.Join(dir, filepath.Base(img)+"."+id+".raw")
			qemutest.Run(t, "qemu-img", "convert", "-l", "snapshot.id="+id, "-O", "raw", img, raw)
			raws = append(raws, raw)
		}
		if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", raws[0], raws[1]).CombinedOutput(); err != nil {
			t.Fatalf("seed %d, after %v: snapshot %s differs: %s", seed, log, id, out)
		}
	}
}

// qimgSnapshot runs one snapshot operation through qimg's driver.
func qimgSnapshot(t *testing.T, img, flag, name string) error {
	n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite, NoBacking: true})
	if err != nil {
		t.Fatalf("open %s: %v", img, err)
	}
	q := n.Driver().(*Image)
	switch flag {
	case "-c":
		err = q.CreateSnapshot(name)
	case "-a":
		err = q.ApplySnapshot(name)
	default:
		err = q.DeleteSnapshot(name)
	}
	if cerr := n.Close(); cerr != nil {
		t.Fatalf("close %s: %v", img, cerr)
	}
	return err
}

// compareTwins fails unless both images have the same snapshot ids and
// names, the same guest view and size, and qimg's twin checks clean.
func compareTwins(t *testing.T, qemuImg, qimgImg, when string) {
	t.Helper()
	if a, b := snapshotTable(t, qemuImg), snapshotTable(t, qimgImg); a != b {
		t.Fatalf("%s: snapshot tables differ:\nqemu-img:\n%s\nqimg:\n%s", when, a, b)
	}
	if a, b := virtualSize(t, qemuImg), virtualSize(t, qimgImg); a != b {
		t.Fatalf("%s: sizes differ: qemu-img %d, qimg %d", when, a, b)
	}
	if out, err := exec.Command("qemu-img", "compare", qemuImg, qimgImg).CombinedOutput(); err != nil {
		t.Fatalf("%s: guest views differ: %s", when, out)
	}
	if out, err := exec.Command("qemu-img", "check", qimgImg).CombinedOutput(); err != nil {
		t.Fatalf("%s: qemu-img check of qimg's image: %s", when, out)
	}
}

// snapshotTable is the ID and TAG columns of qemu-img snapshot -l.
func snapshotTable(t *testing.T, img string) string {
	var rows []string
	for _, line := range strings.Split(qemutest.Run(t, "qemu-img", "snapshot", "-l", img), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] != "ID" && f[0] != "Snapshot" {
			rows = append(rows, f[0]+" "+f[1])
		}
	}
	return strings.Join(rows, "\n")
}

func snapshotIDs(t *testing.T, img string) []string {
	var ids []string
	for _, row := range strings.Split(snapshotTable(t, img), "\n") {
		if f := strings.Fields(row); len(f) > 0 {
			ids = append(ids, f[0])
		}
	}
	return ids
}

func virtualSize(t *testing.T, img string) int64 {
	n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Claim: image.ClaimRead, NoBacking: true})
	if err != nil {
		t.Fatalf("open %s: %v", img, err)
	}
	defer n.Close()
	return n.Size()
}
