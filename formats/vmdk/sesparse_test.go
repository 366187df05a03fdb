package vmdk

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

// seSparseFile builds a small seSparse extent: 8 MiB, grain 0 holding
// 'A', grain 1 zeroed, grain 5 holding 'B' (the second stored grain).
func seSparseFile() []byte {
	le := binary.LittleEndian
	f := make([]byte, (67+16)*512)
	h := f[:512]
	for i, v := range map[int]uint64{0: seConstMagic, 1: seVersion, 2: 16384, 3: 8, 4: 64, 10: 1, 11: 1,
		16: 2, 17: 1, 18: 3, 19: 64, 24: 67, 25: 16} {
		le.PutUint64(h[i*8:], v)
	}
	le.PutUint64(f[512:], seVolatileMagic)
	le.PutUint64(f[2*512:], 0x1000000000000000)
	gt := f[3*512:]
	le.PutUint64(gt[0:], 0x3000000000000000)
	le.PutUint64(gt[8:], 0x2000000000000000)
	le.PutUint64(gt[5*8:], 0x3001000000000000)
	copy(f[67*512:], bytes.Repeat([]byte{'A'}, 4096))
	copy(f[75*512:], bytes.Repeat([]byte{'B'}, 4096))
	return f
}

const seDescriptor = "# Disk DescriptorFile\nversion=1\nCID=5\nparentCID=ffffffff\ncreateType=\"seSparse\"\nRW 16384 SESPARSE \"se-sesparse.vmdk\"\n"

func TestSESparse(t *testing.T) {
	dir := t.TempDir()
	desc := filepath.Join(dir, "se.vmdk")
	os.WriteFile(desc, []byte(seDescriptor), 0o644)
	os.WriteFile(filepath.Join(dir, "se-sesparse.vmdk"), seSparseFile(), 0o644)
	want := make([]byte, 8<<20)
	copy(want, bytes.Repeat([]byte{'A'}, 4096))
	copy(want[5*4096:], bytes.Repeat([]byte{'B'}, 4096))

	n, err := image.Open(desc, image.OpenOptions{Format: "vmdk", Claim: image.ClaimRead})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	got := make([]byte, len(want))
	if _, err := n.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("guest data differs")
	}
	if e, err := n.BlockStatus(4096, 4096); err != nil || !e.Zero || !e.Allocated {
		t.Errorf("zeroed grain: %+v %v", e, err)
	}
	if _, err := image.Open(desc, image.OpenOptions{Format: "vmdk", Claim: image.ClaimWrite, Writable: true}); err == nil {
		t.Error("seSparse opened for writing")
	}
	if !qemutest.Have("qemu-img") {
		return
	}
	out := filepath.Join(dir, "out.raw")
	if o, err := exec.Command("qemu-img", "convert", "-O", "raw", desc, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, o)
	}
	ref, _ := os.ReadFile(out)
	if !bytes.Equal(ref, want) {
		t.Fatal("qemu-img reads other data than qimg")
	}
}
