package image_test

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"qimg/image"
	"qimg/internal/qemutest"
)

// holdWithQemuIO runs qemu-io on path with commands from a pipe until the
// test ends, and returns once it holds its locks.
func holdWithQemuIO(t *testing.T, path string, args ...string) []int64 {
	t.Helper()
	cmd := exec.Command(qemutest.Need(t, "qemu-io"), append(args, path)...)
	var out qemutest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	// ask qemu-io for something and wait for the answer: it has opened
	// the image (and locked it) by then
	io.WriteString(stdin, "read 0 512\n")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "read 512/512") {
		if time.Now().After(deadline) || strings.Contains(out.String(), "can't open") {
			t.Fatalf("qemu-io %v: %s", args, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return qemutest.LockedBytes(t, path)
}

func makeImage(t *testing.T, format string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img."+format)
	out, err := exec.Command(qemutest.Need(t, "qemu-img"), "create", "-q", "-f", format, path, "1M").CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	return path
}

var claimWriteShared = image.Claim{Perm: image.PermConsistentRead | image.PermWrite, Shared: image.PermAll}

// TestLockBytesLikeQemu: for the same use of a raw image, qimg takes the
// lock bytes qemu-io and qemu-img take. qemu-img info takes none; qemu-io
// -r takes 100; qemu-io read/write takes 100 and 101 (raw passes its
// users' claims to the file and qemu-io shares everything).
func TestLockBytesLikeQemu(t *testing.T) {
	path := makeImage(t, "raw")
	for _, tc := range []struct {
		name     string
		qemuArgs []string // qemu-io holding the image this way
		opts     image.OpenOptions
	}{
		{"read-only", []string{"-r", "-f", "raw"}, image.OpenOptions{Format: "raw", Claim: image.ClaimRead}},
		{"read/write", []string{"-f", "raw"}, image.OpenOptions{Format: "raw", Writable: true, Claim: claimWriteShared}},
		{"read-only -U", []string{"-U", "-r", "-f", "raw"}, image.OpenOptions{Format: "raw", ForceShare: true, Claim: image.ClaimRead}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := image.Open(path, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			ours := qemutest.LockedBytes(t, path)
			n.Close()
			if got := qemutest.LockedBytes(t, path); len(got) != 0 {
				t.Fatalf("locks %v left after Close", got)
			}
			theirs := holdWithQemuIO(t, path, tc.qemuArgs...)
			if !slices.Equal(ours, theirs) {
				t.Errorf("qimg locks %v, qemu-io %v locks %v", ours, tc.qemuArgs, theirs)
			}
		})
	}
	// info needs nothing, and so locks nothing on a raw image
	n, err := image.Open(path, image.OpenOptions{Claim: image.ClaimInfo})
	if err != nil {
		t.Fatal(err)
	}
	if got := qemutest.LockedBytes(t, path); len(got) != 0 {
		t.Errorf("info locks %v", got)
	}
	n.Close()
}

// TestQemuHoldsQimgRefused: a qemu-io writing the image makes qimg's
// conflicting opens fail with one line naming the image, the permission
// and "Is another process using the image?".
func TestQemuHoldsQimgRefused(t *testing.T) {
	t.Run("qcow2 held, raw write", func(t *testing.T) {
		path := makeImage(t, "qcow2")
		if got := holdWithQemuIO(t, path, "-f", "qcow2"); !slices.Equal(got, []int64{100, 101, 103, 201, 203}) {
			t.Fatalf("qemu-io holds %v", got)
		}
		_, err := image.Open(path, image.OpenOptions{Format: "raw", Writable: true, Claim: image.ClaimWrite})
		want := fmt.Sprintf(`Failed to get "write" lock. Is another process using the image [%s]?`, path)
		if err == nil || err.Error() != want || !errors.Is(err, image.ErrLocked) {
			t.Fatalf("got %v, want %q", err, want)
		}
		// reading with -U works; plain reading too (raw shares everything)
		for _, fs := range []bool{false, true} {
			n, err := image.Open(path, image.OpenOptions{Format: "raw", Claim: image.ClaimRead, ForceShare: fs})
			if err != nil {
				t.Fatalf("read (force share %v): %v", fs, err)
			}
			n.Close()
		}
	})
	t.Run("raw held, exclusive write", func(t *testing.T) {
		path := makeImage(t, "raw")
		holdWithQemuIO(t, path, "-f", "raw")
		_, err := image.Open(path, image.OpenOptions{Format: "raw", Writable: true, Claim: image.ClaimWrite})
		want := fmt.Sprintf(`Failed to get shared "write" lock. Is another process using the image [%s]?`, path)
		if err == nil || err.Error() != want {
			t.Fatalf("got %v, want %q", err, want)
		}
		// a writer that shares, as qemu-io's, gets in
		n, err := image.Open(path, image.OpenOptions{Format: "raw", Writable: true, Claim: claimWriteShared})
		if err != nil {
			t.Fatal(err)
		}
		n.Close()
	})
}

// TestQimgHoldsQemuRefused: qimg holding an image for writing makes
// qemu-io's write open fail; qemu-io reading and qemu-img info still work.
func TestQimgHoldsQemuRefused(t *testing.T) {
	qemuIO := qemutest.Need(t, "qemu-io")
	qemuImg := qemutest.Need(t, "qemu-img")
	path := makeImage(t, "raw")
	n, err := image.Open(path, image.OpenOptions{Format: "raw", Writable: true, Claim: image.ClaimWrite, User: "test writer"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if got := qemutest.LockedBytes(t, path); !slices.Equal(got, []int64{100, 101, 103, 201, 203}) {
		t.Fatalf("qimg writer locks %v", got)
	}
	out, err := exec.Command(qemuIO, "-f", "raw", "-c", "write 0 512", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `Failed to get "write" lock`) || !strings.Contains(string(out), "Is another process using the image") {
		t.Fatalf("qemu-io write: %v: %s", err, out)
	}
	out, err = exec.Command(qemuIO, "-r", "-f", "raw", "-c", "read 0 512", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "read 512/512") {
		t.Fatalf("qemu-io read: %v: %s", err, out)
	}
	out, err = exec.Command(qemuImg, "info", "--output=json", path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info: %v: %s", err, out)
	}
	// qemu-img resize needs write and resize, which the writer refuses
	out, err = exec.Command(qemuImg, "resize", "-f", "raw", path, "2M").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `Failed to get "write" lock`) {
		t.Fatalf("qemu-img resize: %v: %s", err, out)
	}
	// after Close, qemu-io writes
	n.Close()
	out, err = exec.Command(qemuIO, "-f", "raw", "-c", "write 0 512", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "wrote 512/512") {
		t.Fatalf("qemu-io write after close: %v: %s", err, out)
	}
}
