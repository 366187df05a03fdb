package vdi

import (
	"path/filepath"
	"runtime"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

// TestOpenMemory: opening an image allocates its block map once (4 bytes
// a block), not also a buffer of the map's size to read it through.
func TestOpenMemory(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	path := filepath.Join(t.TempDir(), "big.vdi")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "vdi", path, "8T") // 8 Mi blocks: a 32 MiB map
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	n, err := image.Open(path, image.OpenOptions{Format: "vdi", Claim: image.ClaimRead, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	n.Close()
	const mapBytes = 32 << 20
	if got := after.TotalAlloc - before.TotalAlloc; got > mapBytes+mapBytes/4 {
		t.Fatalf("open allocated %d bytes for a %d-byte block map", got, mapBytes)
	}
}
