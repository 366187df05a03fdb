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

// amendKillSteps is what TestAmendKillHelper amends, in order: every
// refcount width change, a downgrade (zero clusters to expand) and an
// upgrade.
var amendKillSteps = []string{"refcount_bits=4", "refcount_bits=64", "refcount_bits=1",
	"refcount_bits=16", "compat=0.10", "compat=1.1,refcount_bits=8", "refcount_bits=16"}

// TestAmendKillHelper is the amending process of TestKillWhileAmending:
// it runs only when started by it (QIMG_QCOW2_AMEND_KILL_IMAGE set),
// prints "amending", amends through amendKillSteps and prints "done",
// unless killed first.
func TestAmendKillHelper(t *testing.T) {
	img := os.Getenv("QIMG_QCOW2_AMEND_KILL_IMAGE")
	if img == "" {
		t.Skip("helper process of TestKillWhileAmending")
	}
	n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	q := n.Driver().(*Image)
	fmt.Println("amending")
	for _, step := range amendKillSteps {
		o, err := image.ParseOptions(step)
		if err == nil {
			err = q.Amend(o, nil)
		}
		if err != nil {
			fmt.Println("amend", step+":", err)
			os.Exit(2)
		}
	}
	if err := n.Close(); err != nil {
		fmt.Println("close:", err)
		os.Exit(2)
	}
	fmt.Println("done")
}

// TestKillWhileAmending kills amend (SIGKILL) at random moments of a run
// of refcount width and version changes of an overlay (its zero clusters
// become clusters of zeroes in the downgrade): qemu-img check finds leaks
// at worst, and the guest data is intact.
func TestKillWhileAmending(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	if testing.Short() {
		t.Skip("short")
	}
	src := t.TempDir()
	base := filepath.Join(src, "base.qcow2")
	createImage(t, base, "", 32<<20)
	qemutest.Run(t, "qemu-io", "-c", "write -P 9 0 32M", base)
	top := filepath.Join(src, "top.qcow2")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "base.qcow2", "-F", "qcow2", top)
	qemutest.Run(t, "qemu-io", "-c", "write -P 7 0 8M", "-c", "write -z 10M 2M", "-c", "write -P 8 20M 1M",
		"-c", "write -z 20M 64k", top)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	// a first run goes to its end: kills land anywhere within its time
	span := 100 * time.Millisecond
	for round := -1; round < 16; round++ {
		dir := t.TempDir()
		qemutest.Run(t, "cp", base, top, dir)
		img := filepath.Join(dir, "top.qcow2")
		h := qemutest.StartHelper(t, "TestAmendKillHelper", []string{"QIMG_QCOW2_AMEND_KILL_IMAGE=" + img}, "amending")
		when := "amend run to its end"
		if round < 0 {
			span = h.Finish(t)
		} else {
			delay := time.Duration(rng.Int63n(int64(span)))
			rest := h.KillAfter(delay)
			when = fmt.Sprintf("amend killed after %v (%s)", delay, rest)
		}
		leaks := qemutest.CheckNoCorruption(t, img, when)
		qemutest.Run(t, "qemu-io", "-c", "read -P 7 0 8M", "-c", "read -P 9 8M 2M", "-c", "read -P 0 10M 2M",
			"-c", "read -P 9 12M 8M", "-c", "read -P 0 20M 64k", "-c", "read -P 8 20544k 960k", "-c", "read -P 9 21M 11M", img)
		t.Logf("%s: %d leaked clusters", when, leaks)
	}
}
