package rebase

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "qimg/formats/file"
	_ "qimg/formats/qcow2"
	_ "qimg/formats/raw"
	"qimg/internal/qemutest"
)

// TestKillHelper is the rebasing process of TestKillWhileRebasing: it runs
// only when started by it (QIMG_REBASE_KILL_IMAGE set).
func TestKillHelper(t *testing.T) {
	img := os.Getenv("QIMG_REBASE_KILL_IMAGE")
	if img == "" {
		t.Skip("helper process of TestKillWhileRebasing")
	}
	fmt.Println("rebasing")
	b := os.Getenv("QIMG_REBASE_KILL_BACKING")
	r := &Request{Filename: img, Backing: b}
	if b != "" {
		r.BackingFormat = "qcow2"
	}
	if err := r.Run(context.Background()); err != nil {
		fmt.Println("rebase:", err)
		os.Exit(2)
	}
	fmt.Println("done")
}

// TestKillWhileRebasing kills a safe rebase (SIGKILL) at random moments:
// no image may be corrupt and what the image shows must not change,
// whichever backing file its header names afterwards.
func TestKillWhileRebasing(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	if testing.Short() {
		t.Skip("short")
	}
	src := t.TempDir()
	mk := func(name string, args ...string) string {
		p := filepath.Join(src, name)
		qemutest.Run(t, "qemu-img", append(append([]string{"create", "-f", "qcow2"}, args...), p)...)
		return p
	}
	old := mk("old.qcow2", "-o", "size=24M")
	qemutest.Run(t, "qemu-io", "-c", "write -P 1 0 24M", old)
	other := mk("other.qcow2", "-o", "size=20M")
	qemutest.Run(t, "qemu-io", "-c", "write -P 1 0 12M", "-c", "write -P 7 13M 5M", other)
	img := mk("img.qcow2", "-o", "cluster_size=4096", "-b", "old.qcow2", "-F", "qcow2")
	qemutest.Run(t, "qemu-io", "-c", "write -P 3 4M 3M", "-c", "write -z 14M 1M", "-c", "discard 2M 512k", img)
	want := filepath.Join(src, "want.raw")
	qemutest.Run(t, "qemu-img", "convert", "-O", "raw", img, want)

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	targets := []string{"other.qcow2", ""}
	span := 100 * time.Millisecond
	for i := -1; i < 10; i++ {
		dir := t.TempDir()
		for _, n := range []string{"old.qcow2", "other.qcow2", "img.qcow2"} {
			qemutest.Run(t, "cp", filepath.Join(src, n), dir)
		}
		top := filepath.Join(dir, "img.qcow2")
		target := targets[(i+2)%len(targets)]
		h := qemutest.StartHelper(t, "TestKillHelper", []string{"QIMG_REBASE_KILL_IMAGE=" + top, "QIMG_REBASE_KILL_BACKING=" + target}, "rebasing")
		if i < 0 {
			span = h.Finish(t)
			continue
		}
		delay := time.Duration(rng.Int63n(int64(span)))
		rest := h.KillAfter(delay)
		when := fmt.Sprintf("rebase -b %q killed after %v (%s)", target, delay, rest)
		leaks := qemutest.CheckNoCorruption(t, top, when)
		if out := qemutest.Run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", top, want); !strings.Contains(out, "identical") {
			t.Fatalf("%s: the image changed: %s", when, out)
		}
		t.Logf("%s: %d leaked clusters", when, leaks)
	}
}
