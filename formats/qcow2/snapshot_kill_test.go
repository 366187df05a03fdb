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

// snapshotKillRounds is how many operations a helper runs.
const snapshotKillRounds = 6

// TestSnapshotKillHelper is the process the snapshot kill tests kill: on
// the image QIMG_QCOW2_SNAPSHOT_KILL_IMAGE it runs snapshotKillRounds
// operations of the kind QIMG_QCOW2_SNAPSHOT_KILL_OP names, then prints
// "done":
//
//   - create: write a few new clusters (COPIED flags for the snapshot to
//     clear), then take snapshot sN;
//   - apply: apply s-small and s-big in turn;
//   - delete: delete s0, s1, … in turn.
func TestSnapshotKillHelper(t *testing.T) {
	img := os.Getenv("QIMG_QCOW2_SNAPSHOT_KILL_IMAGE")
	if img == "" {
		t.Skip("helper process of the snapshot kill tests")
	}
	n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	q := n.Driver().(*Image)
	fmt.Println("ready")
	buf := bytes.Repeat([]byte{9}, 256<<10)
	for i := 0; i < snapshotKillRounds; i++ {
		switch os.Getenv("QIMG_QCOW2_SNAPSHOT_KILL_OP") {
		case "create":
			if _, err = n.WriteAt(buf, 24<<20+int64(i)*int64(len(buf))); err == nil {
				err = q.CreateSnapshot(fmt.Sprintf("s%d", i))
			}
		case "apply":
			err = q.ApplySnapshot([]string{"s-small", "s-big"}[i%2])
		case "delete":
			err = q.DeleteSnapshot(fmt.Sprintf("s%d", i))
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
	}
	if err := n.Close(); err != nil {
		fmt.Println("close:", err)
		os.Exit(2)
	}
	fmt.Println("done")
}

// killSnapshotOps runs the helper on copies of src: once to its end, to
// measure the span a run takes (a loaded machine only stretches it), then
// rounds times killed at a random moment within that span. After each
// run it checks the promise of every snapshot operation (see
// checkSnapshotPromise) and calls after, then writes over the guest data
// with qemu-io and reads every snapshot back.
func killSnapshotOps(t *testing.T, src, op string, rounds int, after func(img, when string)) {
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	span := 100 * time.Millisecond
	for round := -1; round < rounds; round++ {
		img := filepath.Join(t.TempDir(), "img.qcow2")
		qemutest.Run(t, "cp", src, img)
		h := qemutest.StartHelper(t, "TestSnapshotKillHelper",
			[]string{"QIMG_QCOW2_SNAPSHOT_KILL_IMAGE=" + img, "QIMG_QCOW2_SNAPSHOT_KILL_OP=" + op}, "ready")
		when := op + ": a whole run"
		if round < 0 {
			span = h.Finish(t)
		} else {
			delay := time.Duration(rng.Int63n(int64(span)))
			rest := h.KillAfter(delay)
			when = fmt.Sprintf("%s killed after %v of %v (%s)", op, delay, span, rest)
		}
		checkSnapshotPromise(t, img, when)
		after(img, when)
		// qemu writes over everything the snapshots hold: none changes
		qemutest.Run(t, "qemu-io", "-c", "write -P 10 0 8M", "-c", "write -P 10 20M 1M", img)
		checkSnapshotsRead(t, img, when)
	}
}

// snapshotKillSource makes the image the kill tests start from: 32 MiB,
// 4 KiB clusters, 0x07 over the first 8 MiB and 0x08 over 20M..21M.
func snapshotKillSource(t *testing.T) string {
	qemutest.Need(t, "qemu-img", "qemu-io")
	if testing.Short() {
		t.Skip("short")
	}
	src := filepath.Join(t.TempDir(), "src.qcow2")
	createImage(t, src, "cluster_size=4096", 32<<20)
	qemutest.Run(t, "qemu-io", "-c", "write -P 7 0 8M", "-c", "write -P 8 20M 1M", src)
	return src
}

// readsKillSource checks that img still reads as snapshotKillSource made it.
func readsKillSource(t *testing.T, img string) {
	qemutest.Run(t, "qemu-io", "-c", "read -P 7 0 8M", "-c", "read -P 8 20M 1M", img)
}

// TestKillWhileSnapshotting kills snapshot creation at random moments.
// qemu-img check may find leaks and COPIED flags missing on clusters the
// active image alone uses (a write copies them, harmlessly), never a
// COPIED flag on a cluster a snapshot shares (a write would change the
// snapshot); the guest data is intact.
func TestKillWhileSnapshotting(t *testing.T) {
	src := snapshotKillSource(t)
	killSnapshotOps(t, src, "create", 16, func(img, _ string) { readsKillSource(t, img) })
}

// TestKillWhileDeleting kills snapshot -d at random moments: the same
// promise, the guest data intact, the snapshots left whole.
func TestKillWhileDeleting(t *testing.T) {
	src := snapshotKillSource(t)
	for i := 0; i < snapshotKillRounds; i++ {
		qemutest.Run(t, "qemu-io", "-c", fmt.Sprintf("write -P 9 %d 256k", 24<<20+i*256<<10), src)
		qemutest.Run(t, "qemu-img", "snapshot", "-c", fmt.Sprintf("s%d", i), src)
	}
	killSnapshotOps(t, src, "delete", 8, func(img, _ string) { readsKillSource(t, img) })
}

// TestKillWhileApplying kills snapshot -a between snapshots of two sizes
// (each switch moves the L1 table and changes the size in one header
// write) at random moments: the image shows one snapshot or the other,
// whole, with the size it was taken at.
func TestKillWhileApplying(t *testing.T) {
	src := snapshotKillSource(t)
	qemutest.Run(t, "qemu-img", "snapshot", "-c", "s-small", src)
	qemutest.Run(t, "qemu-img", "resize", "-q", src, "64M")
	qemutest.Run(t, "qemu-io", "-c", "write -P 9 60M 1M", src)
	qemutest.Run(t, "qemu-img", "snapshot", "-c", "s-big", src)
	killSnapshotOps(t, src, "apply", 8, func(img, when string) {
		reads := []string{"-c", "read -P 7 0 8M", "-c", "read -P 8 20M 1M"}
		info := qemutest.Run(t, "qemu-img", "info", "--output=json", img)
		switch {
		case strings.Contains(info, `"virtual-size": 67108864,`):
			reads = append(reads, "-c", "read -P 9 60M 1M", "-c", "read -P 0 32M 28M")
		case !strings.Contains(info, `"virtual-size": 33554432,`):
			t.Fatalf("%s: neither snapshot's size:\n%s", when, info)
		}
		qemutest.Run(t, "qemu-io", append(reads, img)...)
	})
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
