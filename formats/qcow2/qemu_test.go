package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	_ "qimg/formats/file"
	_ "qimg/formats/raw"
	"qimg/image"
	"qimg/internal/qemutest"
)

// qemuIO runs qemu-io commands on a qcow2 image.
func qemuIO(t testing.TB, img string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	args = append(args, img)
	qemutest.Run(t, "qemu-io", args...)
}

// rawOf is what qemu-img convert -O raw makes of an image.
func rawOf(t testing.TB, img string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "raw")
	qemutest.Run(t, "qemu-img", "convert", "-O", "raw", img, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readAll reads the whole image through qimg in odd-sized pieces.
func readAll(t testing.TB, img string) []byte {
	t.Helper()
	n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Claim: image.ClaimRead})
	if err != nil {
		t.Fatalf("open %s: %v", img, err)
	}
	defer n.Close()
	out := make([]byte, n.Size())
	const piece = 100003
	for off := int64(0); off < n.Size(); off += piece {
		end := min(off+piece, n.Size())
		if _, err := n.ReadAt(out[off:end], off); err != nil {
			t.Fatalf("read %s at %d: %v", img, off, err)
		}
	}
	checkBlockStatus(t, n, out)
	return out
}

// checkBlockStatus walks the block status of the chain and checks that
// runs reported as zero read as zeroes and that the runs tile the image.
func checkBlockStatus(t testing.TB, n *image.Node, content []byte) {
	t.Helper()
	for off := int64(0); off < n.Size(); {
		e, err := n.BlockStatusChain(off, n.Size()-off)
		if err != nil {
			t.Fatalf("block status at %d: %v", off, err)
		}
		if e.Zero {
			for i, b := range content[e.Offset:e.End()] {
				if b != 0 {
					t.Fatalf("block status [%d,+%d) says zero but byte %d is %#x", e.Offset, e.Length, e.Offset+int64(i), b)
				}
			}
		}
		off = e.End()
	}
}

func compareWithQemu(t testing.TB, img string) {
	t.Helper()
	want := rawOf(t, img)
	got := readAll(t, img)
	if !bytes.Equal(got, want) {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: first difference at byte %d: qimg %#x, qemu %#x", img, i, got[i], want[i])
			}
		}
		t.Fatalf("%s: sizes differ: qimg %d, qemu %d", img, len(got), len(want))
	}
}

// guestWrites is a mix of pattern writes, zero writes, discards and
// compressed writes, at offsets that cross cluster and subcluster
// boundaries for every cluster size.
func guestWrites(cs int64, compressed bool) []string {
	cmds := []string{
		"write -P 0x11 0 4k",
		"write -P 0x22 6k 70k",
		"write -P 0x33 1m 1m",
		"write -P 0x44 3m 512",
		"write -z 1280k 96k",
		"discard 1536k 128k",
		"write -P 0x55 4095k 1k",
	}
	if compressed {
		off := int64(2 << 20)
		if cs > 1<<20 {
			off = 4 << 20 // the image is 12M then
		}
		cmds = append(cmds, fmt.Sprintf("write -c -P 0x66 %d %d", off, cs))
		cmds = append(cmds, fmt.Sprintf("write -c -P 0x77 %d %d", off+2*cs, 2*cs))
	}
	return cmds
}

func TestReadMatchesQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	type combo struct {
		compat   string
		cs       int64
		refbits  int
		extL2    bool
		compress string
	}
	var combos []combo
	for _, cs := range []int64{512, 4096, 65536, 2 << 20} {
		combos = append(combos, combo{"0.10", cs, 16, false, "zlib"})
		for _, rb := range []int{1, 16, 64} {
			combos = append(combos, combo{"1.1", cs, rb, false, "zlib"})
			if cs >= 16384 {
				combos = append(combos, combo{"1.1", cs, rb, true, "zstd"})
			}
		}
	}
	combos = append(combos, combo{"1.1", 65536, 2, false, "zstd"}, combo{"1.1", 65536, 4, true, "zlib"},
		combo{"1.1", 65536, 8, false, "zlib"}, combo{"1.1", 65536, 32, false, "zlib"})
	for i, c := range combos {
		name := fmt.Sprintf("%s-%d-%d-%v-%s", c.compat, c.cs, c.refbits, c.extL2, c.compress)
		t.Run(name, func(t *testing.T) {
			img := filepath.Join(dir, fmt.Sprintf("img%d.qcow2", i))
			opts := fmt.Sprintf("compat=%s,cluster_size=%d,refcount_bits=%d", c.compat, c.cs, c.refbits)
			if c.compat == "1.1" {
				opts += fmt.Sprintf(",extended_l2=%v,compression_type=%s", onOff(c.extL2), c.compress)
			}
			size := "4M"
			if c.cs > 1<<20 {
				size = "12M"
			}
			qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, img, size)
			qemuIO(t, img, guestWrites(c.cs, true)...)
			compareWithQemu(t, img)
		})
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// TestReadChain reads a chain of three layers, each writing its own
// pattern over parts of the one below, with zero writes and discards in
// the upper layers and a base shorter than the top.
func TestReadChain(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	for _, ext := range []bool{false, true} {
		t.Run(fmt.Sprintf("extended_l2=%v", ext), func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "base.qcow2")
			mid := filepath.Join(dir, "mid.qcow2")
			top := filepath.Join(dir, "top.qcow2")
			o := "extended_l2=" + onOff(ext)
			qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", o, base, "3M")
			qemuIO(t, base, "write -P 1 0 3M")
			qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", o, "-b", "base.qcow2", "-F", "qcow2", mid, "4M")
			qemuIO(t, mid, "write -P 2 64k 4k", "write -P 2 1m 200k", "write -z 2m 64k", "discard 0 64k", "write -P 2 3m 1m")
			qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", o, "-b", "mid.qcow2", "-F", "qcow2", top, "5M")
			qemuIO(t, top, "write -P 3 66k 1k", "write -P 3 1100k 3k", "write -z 2100k 8k", "write -P 3 4m 100k")
			compareWithQemu(t, top)
			compareWithQemu(t, mid)
		})
	}
	t.Run("raw base", func(t *testing.T) {
		dir := t.TempDir()
		base := filepath.Join(dir, "base.raw")
		top := filepath.Join(dir, "top.qcow2")
		if err := os.WriteFile(base, bytes.Repeat([]byte{9}, 100000), 0o644); err != nil {
			t.Fatal(err)
		}
		qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top, "1M")
		qemuIO(t, top, "write -P 3 4k 1k")
		compareWithQemu(t, top)
	})
}

func TestReadDataFile(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	for _, raw := range []bool{false, true} {
		t.Run(fmt.Sprintf("data_file_raw=%v", raw), func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "img.qcow2")
			qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "img.data")+",data_file_raw="+onOff(raw), img, "4M")
			qemuIO(t, img, guestWrites(65536, false)...)
			compareWithQemu(t, img)
		})
	}
}

func TestReadPreallocated(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	for _, mode := range []string{"metadata", "falloc", "full"} {
		t.Run(mode, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "img.qcow2")
			qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation="+mode, img, "3M")
			qemuIO(t, img, "write -P 5 100k 10k", "write -z 1m 64k")
			compareWithQemu(t, img)
		})
	}
}

// TestReadConvertCompressed reads images that qemu-img convert -c wrote
// (every cluster compressed where it shrinks), zlib and zstd, several
// cluster sizes.
func TestReadConvertCompressed(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	b := make([]byte, 3<<20+12345)
	for i := range b {
		switch {
		case i < 1<<20:
			b[i] = byte(i / 3000)
		case i < 2<<20:
			b[i] = byte(i * 7 % 251) // compresses less
		default:
			b[i] = byte(i >> 12)
		}
	}
	if err := os.WriteFile(src, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, ct := range []string{"zlib", "zstd"} {
		for _, cs := range []string{"4k", "64k", "2M"} {
			img := filepath.Join(dir, ct+cs+".qcow2")
			qemutest.Run(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type="+ct+",cluster_size="+cs, src, img)
			compareWithQemu(t, img)
		}
	}
}
