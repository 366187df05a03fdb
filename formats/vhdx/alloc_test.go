package vhdx

import (
	"path/filepath"
	"runtime"
	"testing"

	"qimg/image"
)

// The BAT update of a new block (header updates, a log entry and its
// replay) reuses the image's memory: a copy allocates a block every few
// MiB, and garbage per block grew the heap, and the peak RSS, with the
// size of the image copied.
func TestNewBlockGarbage(t *testing.T) {
	const blocks = 16
	img := filepath.Join(t.TempDir(), "g.vhdx")
	createImage(t, img, "block_size=1M", 2*blocks<<20)
	n, err := image.Open(img, image.OpenOptions{Format: "vhdx", Writable: true, Claim: image.ClaimWrite, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	data := make([]byte, 4096)
	write := func(block int) {
		if _, err := n.WriteAt(data, int64(block)<<20); err != nil {
			t.Fatal(err)
		}
	}
	write(0) // the first write also renews the data write GUID
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for b := 1; b <= blocks; b++ {
		write(b)
	}
	runtime.ReadMemStats(&after)
	perBlock := (after.TotalAlloc - before.TotalAlloc) / blocks
	t.Logf("%d bytes allocated per new block", perBlock)
	// one log entry and one header are 8 KiB and 4 KiB: the limit is
	// below what a copy of them per update would take
	if perBlock > 4096 {
		t.Errorf("a new block allocates %d bytes, want at most 4096", perBlock)
	}
}
