package parallels

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"qimg/image"
	"qimg/internal/drivertest"
)

// TestInUseWhileOpen: an image open for writing carries qemu's in-use
// mark on disk from open to close; closing clears it and cuts the file
// after the last cluster (the preallocated tail goes).
func TestInUseWhileOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.parallels")
	if err := os.WriteFile(path, drivertest.Seed(t, formatName, "small.parallels"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := image.Open(path, image.OpenOptions{Format: formatName, Claim: image.ClaimWrite, Writable: true, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := inUseWord(t, path); got != inUseMagic {
		t.Errorf("in-use word while open: %#x, want %#x", got, inUseMagic)
	}
	data := bytes.Repeat([]byte{9}, 4096)
	if _, err := n.WriteAt(data, 200<<10); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() < 128<<20 {
		t.Errorf("file size while open %d: the default 128 MiB preallocation is missing", fi.Size())
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if got := inUseWord(t, path); got != 0 {
		t.Errorf("in-use word after close: %#x", got)
	}
	if fi, _ := os.Stat(path); fi.Size() != 24576+4096 {
		t.Errorf("file size after close %d, want %d", fi.Size(), 24576+4096)
	}
}

func inUseWord(t *testing.T, path string) uint32 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return le.Uint32(b[offInUse:])
}

// TestPreallocOptions: prealloc-mode=truncate grows the file by the
// clusters and prealloc-size without writing zeroes; a mode qemu does not
// know is refused in its words.
func TestPreallocOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.parallels")
	small := drivertest.Seed(t, formatName, "small.parallels")
	if err := os.WriteFile(path, small, 0o644); err != nil {
		t.Fatal(err)
	}
	open := func(opts map[string]string) (*image.Node, error) {
		return image.Open(path, image.OpenOptions{Format: formatName, Claim: image.ClaimWrite, Writable: true, NoBacking: true, DriverOptions: opts})
	}
	if _, err := open(map[string]string{"prealloc-mode": "bogus"}); err == nil || image.Strerror(err) != "invalid parameter value: bogus" {
		t.Errorf("bogus mode: %v", err)
	}
	n, err := open(map[string]string{"prealloc-mode": "truncate", "prealloc-size": "1M"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteAt([]byte{1}, 200<<10); err != nil {
		t.Fatal(err)
	}
	want := int64(len(small)) + 4096 + 1<<20
	if fi, _ := os.Stat(path); fi.Size() != want {
		t.Errorf("file size while open %d, want %d", fi.Size(), want)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != int64(len(small))+4096 {
		t.Errorf("file size after close %d", fi.Size())
	}
}
