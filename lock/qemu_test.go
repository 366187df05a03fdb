package lock

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"qimg/internal/qemutest"
)

// qemuIO runs qemu-io on path, reading commands from a pipe, and waits
// until it holds its locks. The process ends when the test does.
type qemuIO struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   qemutest.Buffer
}

func startQemuIO(t *testing.T, path string, want []int64, args ...string) *qemuIO {
	t.Helper()
	bin := qemutest.Need(t, "qemu-io")
	q := &qemuIO{cmd: exec.Command(bin, append(args, path)...)}
	q.cmd.Stdout = &q.out
	q.cmd.Stderr = &q.out
	var err error
	if q.stdin, err = q.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := q.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.stop() })
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(qemutest.LockedBytes(t, path), want) {
		if time.Now().After(deadline) {
			t.Fatalf("qemu-io %v: locked bytes %v, want %v; output: %s", args, qemutest.LockedBytes(t, path), want, q.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return q
}

func (q *qemuIO) stop() {
	if q.stdin != nil {
		q.stdin.Close()
		q.stdin = nil
		done := make(chan struct{})
		go func() { q.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			q.cmd.Process.Kill()
			<-done
		}
	}
}

func makeRaw(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestQemuIOHolding: the bytes qemu-io takes are the bytes Set takes for
// the same claim, and a running qemu-io refuses our conflicting claims.
func TestQemuIOHolding(t *testing.T) {
	path := makeRaw(t)

	// qemu-io read/write on raw: holds read and write, shares everything.
	q := startQemuIO(t, path, []int64{100, 101}, "-f", "raw")
	a := openLock(t, path)
	if err := a.Set(bRead|bWrite|bSize, bAll); err != nil {
		t.Fatalf("writing alongside a sharing writer: %v", err)
	}
	if err := a.Set(bRead|bWrite|bSize, bRead|bWU); !isConflict(err, 1, true) {
		t.Fatalf("refusing write to a writer: got %v, want shared conflict on write", err)
	}
	if err := a.Set(bRead, bAll&^bRead); !isConflict(err, 0, true) {
		t.Fatalf("refusing read to a reader: got %v, want shared conflict on consistent read", err)
	}
	a.Release()
	q.stop()
	if got := qemutest.LockedBytes(t, path); len(got) != 0 {
		t.Fatalf("after qemu-io exit: %v", got)
	}

	// qemu-io on a qcow2 image refuses write and resize on its file, as
	// our format drivers with metadata do.
	qcow := filepath.Join(t.TempDir(), "img.qcow2")
	out, err := exec.Command(qemutest.Need(t, "qemu-img"), "create", "-q", "-f", "qcow2", qcow, "1M").CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	startQemuIO(t, qcow, []int64{100, 101, 103, 201, 203}, "-f", "qcow2")
	a = openLock(t, qcow)
	if err := a.Set(bRead, bAll); err != nil {
		t.Fatalf("reading alongside: %v", err)
	}
	for _, bit := range []uint{1, 3} {
		if err := a.Set(bRead|1<<bit, bAll); !isConflict(err, bit, false) {
			t.Fatalf("claiming bit %d: got %v, want conflict", bit, err)
		}
	}
}

// TestQemuIORefused: while we hold the bytes of a writer that shares only
// reading, qemu-io cannot open the image for writing, but can for reading.
func TestQemuIORefused(t *testing.T) {
	bin := qemutest.Need(t, "qemu-io")
	path := makeRaw(t)
	a := openLock(t, path)
	if err := a.Set(bRead|bWrite|bSize, bRead|bWU); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-f", "raw", "-c", "write 0 512", path).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(string(out), `Failed to get "write" lock`) {
		t.Fatalf("qemu-io write: %v: %s", err, out)
	}
	out, err = exec.Command(bin, "-r", "-f", "raw", "-c", "read 0 512", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "read 512/512") {
		t.Fatalf("qemu-io read: %v: %s", err, out)
	}
	// Refusing consistent read too keeps every reader out, even one that
	// force-shares (-U): it still needs consistent read.
	if err := a.Set(bRead|bWrite|bSize, 0); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-r"}, {"-U", "-r"}} {
		out, _ = exec.Command(bin, append(args, "-f", "raw", "-c", "read 0 512", path)...).CombinedOutput()
		if !strings.Contains(string(out), `Failed to get "consistent read" lock`) {
			t.Fatalf("qemu-io %v read: %s", args, out)
		}
	}
	// Released: qemu-io writes.
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bin, "-f", "raw", "-c", "write 0 512", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "wrote 512/512") {
		t.Fatalf("qemu-io write after release: %v: %s", err, out)
	}
}
