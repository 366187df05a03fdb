package commit

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

// TestKillHelper is the committing process of TestKillWhileCommitting: it
// runs only when started by it (QIMG_COMMIT_KILL_TOP set), prints
// "committing" and commits until done or killed.
func TestKillHelper(t *testing.T) {
	top := os.Getenv("QIMG_COMMIT_KILL_TOP")
	if top == "" {
		t.Skip("helper process of TestKillWhileCommitting")
	}
	fmt.Println("committing")
	r := &Request{Filename: top, Base: os.Getenv("QIMG_COMMIT_KILL_BASE")}
	if err := r.Run(context.Background()); err != nil {
		fmt.Println("commit:", err)
		os.Exit(2)
	}
	fmt.Println("done")
}

// TestKillWhileCommitting kills a commit (SIGKILL) at random moments, in
// the copy and in the emptying of the top: no image may be corrupt, what
// the top shows must not change, and committing again must finish the job.
func TestKillWhileCommitting(t *testing.T) {
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
	l0 := mk("l0.qcow2", "-o", "cluster_size=4096", "-o", "size=24M")
	qemutest.Run(t, "qemu-io", "-c", "write -P 1 0 24M", l0)
	l1 := mk("l1.qcow2", "-o", "cluster_size=16384", "-b", "l0.qcow2", "-F", "qcow2")
	qemutest.Run(t, "qemu-io", "-c", "write -P 2 1M 6M", "-c", "write -z 8M 2M", "-c", "discard 12M 1M", l1)
	l2 := mk("l2.qcow2", "-o", "cluster_size=4096", "-b", "l1.qcow2", "-F", "qcow2", "-o", "size=28M")
	qemutest.Run(t, "qemu-io", "-c", "write -P 3 4M 5M", "-c", "write -z 14M 3M", "-c", "discard 2M 512k",
		"-c", "write -P 4 20M 7M", "-c", "write -P 5 10000 70000", l2)
	want := filepath.Join(src, "want.raw")
	qemutest.Run(t, "qemu-img", "convert", "-O", "raw", l2, want)

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	bases := []string{"", "l0.qcow2"}
	// a first commit runs to its end: kills land anywhere within its time
	span := 100 * time.Millisecond
	for i := -1; i < 12; i++ {
		dir := t.TempDir()
		for _, n := range []string{"l0.qcow2", "l1.qcow2", "l2.qcow2"} {
			qemutest.Run(t, "cp", filepath.Join(src, n), dir)
		}
		top := filepath.Join(dir, "l2.qcow2")
		base := bases[(i+2)%len(bases)]
		h := qemutest.StartHelper(t, "TestKillHelper", []string{"QIMG_COMMIT_KILL_TOP=" + top, "QIMG_COMMIT_KILL_BASE=" + base}, "committing")
		if i < 0 {
			span = h.Finish(t)
			continue
		}
		delay := time.Duration(rng.Int63n(int64(span)))
		rest := h.KillAfter(delay)
		when := fmt.Sprintf("commit -b %q killed after %v (%s)", base, delay, rest)
		var leaks int64
		for _, n := range []string{"l0.qcow2", "l1.qcow2", "l2.qcow2"} {
			leaks += qemutest.CheckNoCorruption(t, filepath.Join(dir, n), when)
		}
		if out := qemutest.Run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", top, want); !strings.Contains(out, "identical") {
			t.Fatalf("%s: the top changed: %s", when, out)
		}
		// committing again completes the job
		r := &Request{Filename: top, Base: base}
		if err := r.Run(context.Background()); err != nil {
			t.Fatalf("%s: commit again: %v", when, err)
		}
		into := filepath.Join(dir, "l1.qcow2")
		if base != "" {
			into = filepath.Join(dir, base)
		}
		if out := qemutest.Run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", into, want); !strings.Contains(out, "identical") {
			t.Fatalf("%s: after committing again: %s", when, out)
		}
		qemutest.CheckNoCorruption(t, into, when+", committed again")
		t.Logf("%s: %d leaked clusters", when, leaks)
	}
}
