package image_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

func rawFile(t *testing.T, size int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSharedFileReopened: a file open read-only that a writer joins is one
// node, reopened read/write with its locks on one descriptor.
func TestSharedFileReopened(t *testing.T) {
	path := rawFile(t, 1<<20)
	r, err := image.Open(path, image.OpenOptions{Format: "raw", Claim: image.ClaimRead})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := image.Open(path, image.OpenOptions{Format: "raw", Writable: true, Claim: claimWriteShared})
	if err != nil {
		t.Fatal(err)
	}
	if r.File() != w.File() || !w.File().Writable() {
		t.Fatal("not one writable file node")
	}
	if got := qemutest.LockedBytes(t, path); !slices.Equal(got, []int64{100, 101}) {
		t.Fatalf("locks %v", got)
	}
	if _, err := w.WriteAt([]byte("data"), 4096); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := r.ReadAt(buf, 4096); err != nil || string(buf) != "data" {
		t.Fatalf("reader sees %q, %v", buf, err)
	}
	if _, err := r.WriteAt(buf, 0); !errors.Is(err, image.ErrReadOnly) {
		t.Fatalf("write through the reader: %v", err)
	}
	w.Close()
	if got := qemutest.LockedBytes(t, path); !slices.Equal(got, []int64{100}) {
		t.Fatalf("locks %v after the writer left", got)
	}
	r.Close()
	if got := qemutest.LockedBytes(t, path); len(got) != 0 {
		t.Fatalf("locks %v after close", got)
	}
}

// TestNodeReopenRaw: dynamic read-only on a real raw image.
func TestNodeReopenRaw(t *testing.T) {
	path := rawFile(t, 1<<20)
	n, err := image.Open(path, image.OpenOptions{Format: "raw", Claim: image.ClaimRead})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Reopen(true); err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := n.Reopen(false); err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteAt([]byte("y"), 0); !errors.Is(err, image.ErrReadOnly) {
		t.Fatalf("write after Reopen(false): %v", err)
	}
	if got := qemutest.LockedBytes(t, path); !slices.Equal(got, []int64{100}) {
		t.Fatalf("locks %v", got)
	}
	// (after the locks: with POSIX locks, this open and close of the file
	// drops them all)
	b, _ := os.ReadFile(path)
	if !bytes.Equal(b[:1], []byte("x")) {
		t.Fatal("write did not land")
	}
}
