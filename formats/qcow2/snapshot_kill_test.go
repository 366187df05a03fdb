package qcow2

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"qimg/image"
	"qimg/internal/qemutest"
)

// snapshotKillRounds is how many snapshots the helper takes; before each
// it writes new clusters, so that every snapshot has COPIED flags to clear.
const snapshotKillRounds = 6

// TestSnapshotKillHelper is the process TestKillWhileSnapshotting kills:
// it writes a few clusters and takes a snapshot, snapshotKillRounds times,
// then prints "done".
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
	buf := bytes.Repeat([]byte{9}, 256<<10)
	for i := 0; i < snapshotKillRounds; i++ {
		if _, err := n.WriteAt(buf, 24<<20+int64(i)*int64(len(buf))); err != nil {
			fmt.Println("write:", err)
			os.Exit(2)
		}
		if err := q.CreateSnapshot(fmt.Sprintf("s%d", i)); err != nil {
			fmt.Println("snapshot:", err)
			os.Exit(2)
		}
	}
	if err := n.Close(); err != nil {
		fmt.Println("close:", err)
		os.Exit(2)
	}
	fmt.Println("done")
}

// TestKillWhileSnapshotting kills snapshot creation at random moments
// within the time a whole run takes (measured first, so a loaded machine
// only stretches the span). Its promise, checked by qemu-img check's own
// findings: no COPIED flag on a cluster that a snapshot shares (a write
// would change the snapshot); what a kill may leave is leaks and COPIED
// flags missing on clusters the active image alone uses (a write copies
// them, harmlessly). A write by qemu after the kill leaves every snapshot
// as it was, and the guest data is intact.
func TestKillWhileSnapshotting(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	if testing.Short() {
		t.Skip("short")
	}
	src := filepath.Join(t.TempDir(), "src.qcow2")
	createImage(t, src, "cluster_size=4096", 32<<20)
	qemutest.Run(t, "qemu-io", "-c", "write -P 7 0 8M", "-c", "write -P 8 20M 1M", src)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	span := 100 * time.Millisecond
	for round := -1; round < 16; round++ {
		img := filepath.Join(t.TempDir(), "img.qcow2")
		qemutest.Run(t, "cp", src, img)
		h := qemutest.StartHelper(t, "TestSnapshotKillHelper", []string{"QIMG_QCOW2_SNAPSHOT_KILL_IMAGE=" + img}, "snapshotting")
		if round < 0 {
			span = h.Finish(t)
			checkSnapshotPromise(t, img, "a whole run")
			continue
		}
		delay := time.Duration(rng.Int63n(int64(span)))
		rest := h.KillAfter(delay)
		when := fmt.Sprintf("snapshots killed after %v of %v (%s)", delay, span, rest)
		checkSnapshotPromise(t, img, when)
		qemutest.Run(t, "qemu-io", "-c", "read -P 7 0 8M", "-c", "read -P 8 20M 1M", img)
		// qemu writes over everything the snapshots hold: none changes
		qemutest.Run(t, "qemu-io", "-c", "write -P 10 0 8M", "-c", "write -P 10 20M 1M", img)
		checkSnapshotsRead(t, img, when)
	}
}

// copiedError is one of qemu-img check's OFLAG_COPIED findings: the L1 or
// L2 entry it prints and the refcount of the cluster the entry points at.
var copiedError = regexp.MustCompile(`^ERROR OFLAG_COPIED (?:data cluster: l2_entry|L2 cluster: l1_index=\d+ l1_entry)=([0-9a-f]+) refcount=(\d+)$`)

// checkSnapshotPromise runs qemu-img check on img and fails on any error
// but a COPIED flag missing on a cluster with refcount 1.
func checkSnapshotPromise(t *testing.T, img, when string) {
	t.Helper()
	out, _ := exec.Command("qemu-img", "check", img).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "ERROR") {
			continue
		}
		m := copiedError.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("%s: %s", when, out)
		}
		entry, _ := strconv.ParseUint(m[1], 16, 64)
		refcount, _ := strconv.ParseUint(m[2], 10, 64)
		if entry&oflagCopied != 0 || refcount != 1 {
			t.Fatalf("%s: a COPIED flag on a shared cluster (%s)\n%s", when, line, out)
		}
	}
}

// checkSnapshotsRead converts every snapshot in img and reads back the
// data it was taken with.
func checkSnapshotsRead(t *testing.T, img, when string) {
	t.Helper()
	list := qemutest.Run(t, "qemu-img", "snapshot", "-l", img)
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(f[1], "s") {
			continue
		}
		raw := filepath.Join(t.TempDir(), f[1]+".raw")
		qemutest.Run(t, "qemu-img", "convert", "-l", "snapshot.id="+f[0], "-O", "raw", img, raw)
		out, err := exec.Command("qemu-io", "-f", "raw", "-c", "read -P 7 0 8M", "-c", "read -P 8 20M 1M", raw).CombinedOutput()
		if err != nil || strings.Contains(string(out), "verification failed") {
			t.Fatalf("%s: snapshot %s changed by a later write:\n%s", when, f[1], out)
		}
	}
}

// TestApplyKillHelper is the process TestKillWhileApplying kills: it
// applies the snapshots s-small and s-big in turn, snapshotKillRounds
// times, then prints "done".
func TestApplyKillHelper(t *testing.T) {
	img := os.Getenv("QIMG_QCOW2_APPLY_KILL_IMAGE")
	if img == "" {
		t.Skip("helper process of TestKillWhileApplying")
	}
	n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	q := n.Driver().(*Image)
	fmt.Println("applying")
	for i := 0; i < snapshotKillRounds; i++ {
		if err := q.ApplySnapshot([]string{"s-small", "s-big"}[i%2]); err != nil {
			fmt.Println("apply:", err)
			os.Exit(2)
		}
	}
	if err := n.Close(); err != nil {
		fmt.Println("close:", err)
		os.Exit(2)
	}
	fmt.Println("done")
}

// TestKillWhileApplying kills snapshot -a between snapshots of two sizes
// (the L1 table moves with the size) at random moments: the image shows
// one snapshot or the other, whole, with the size it was taken at, and
// keeps the promise of TestKillWhileSnapshotting.
func TestKillWhileApplying(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	if testing.Short() {
		t.Skip("short")
	}
	src := filepath.Join(t.TempDir(), "src.qcow2")
	createImage(t, src, "cluster_size=4096", 32<<20)
	qemutest.Run(t, "qemu-io", "-c", "write -P 7 0 8M", "-c", "write -P 8 20M 1M", src)
	qemutest.Run(t, "qemu-img", "snapshot", "-c", "s-small", src)
	qemutest.Run(t, "qemu-img", "resize", "-q", src, "64M")
	qemutest.Run(t, "qemu-io", "-c", "write -P 9 60M 1M", src)
	qemutest.Run(t, "qemu-img", "snapshot", "-c", "s-big", src)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	span := 100 * time.Millisecond
	for round := -1; round < 8; round++ {
		img := filepath.Join(t.TempDir(), "img.qcow2")
		qemutest.Run(t, "cp", src, img)
		h := qemutest.StartHelper(t, "TestApplyKillHelper", []string{"QIMG_QCOW2_APPLY_KILL_IMAGE=" + img}, "applying")
		if round < 0 {
			span = h.Finish(t)
			checkSnapshotPromise(t, img, "a whole run")
			continue
		}
		delay := time.Duration(rng.Int63n(int64(span)))
		rest := h.KillAfter(delay)
		when := fmt.Sprintf("apply killed after %v of %v (%s)", delay, span, rest)
		checkSnapshotPromise(t, img, when)
		reads := []string{"-c", "read -P 7 0 8M", "-c", "read -P 8 20M 1M"}
		info := qemutest.Run(t, "qemu-img", "info", "--output=json", img)
		switch {
		case strings.Contains(info, `"virtual-size": 67108864,`):
			reads = append(reads, "-c", "read -P 9 60M 1M", "-c", "read -P 0 32M 28M")
		case !strings.Contains(info, `"virtual-size": 33554432,`):
			t.Fatalf("%s: neither snapshot's size:\n%s", when, info)
		}
		qemutest.Run(t, "qemu-io", append(reads, img)...)
		qemutest.Run(t, "qemu-io", "-c", "write -P 10 0 8M", "-c", "write -P 10 20M 1M", img)
		checkSnapshotsRead(t, img, when)
	}
}
