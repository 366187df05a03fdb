package bochs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	_ "qimg/formats/file"
	"qimg/image"
	"qimg/internal/drivertest"
	"qimg/internal/qemutest"
)

func writeImage(t *testing.T, b []byte) string {
	return drivertest.WriteImage(t, "img.bochs", b)
}

func readImage(path string) ([]byte, error) { return drivertest.ReadImage(path, formatName) }

// TestReadAsQemu: generated images read as qemu-img convert -O raw
// reads them.
func TestReadAsQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	v1 := defaultLayout()
	v1.v1 = true
	odd := defaultLayout()
	odd.bitmapLen, odd.extentSize, odd.catalog, odd.diskSize = 100, 4096, 40, 40*4096-1000
	big := defaultLayout()
	big.headerLen, big.extentSize, big.catalog, big.diskSize = 1024, 65536, 5, 5*65536
	for name, l := range map[string]layout{"v2": defaultLayout(), "v1": v1, "odd": odd, "big": big} {
		t.Run(name, func(t *testing.T) {
			path := writeImage(t, l.generate(int64(len(name))))
			got, err := readImage(path)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out.raw")
			qemutest.Run(t, "qemu-img", "convert", "-f", "bochs", "-O", "raw", path, out)
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("data differs from qemu-img's (%d vs %d bytes)", len(got), len(want))
			}
		})
	}
}

// TestShortFile: a file shorter than its header reads as padded with
// zeroes, as qemu-img reads it.
func TestShortFile(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	path := writeImage(t, defaultLayout().headerBytes()[:300])
	qemutest.Run(t, "qemu-img", "info", "-f", "bochs", path)
	if _, err := readImage(path); err != nil {
		t.Fatal(err)
	}
}

// TestBadHeaders: malformed headers are refused with qemu-img's words.
func TestBadHeaders(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	mod := func(f func(*layout)) []byte {
		l := defaultLayout()
		f(&l)
		return append(l.headerBytes(), make([]byte, 4096)...)
	}
	cases := map[string][]byte{
		"catalog too large": mod(func(l *layout) { l.catalog = 0x100001 }),
		"catalog too small": mod(func(l *layout) { l.diskSize = 17 * 8192 }),
		"extent small":      mod(func(l *layout) { l.extentSize = 256 }),
		"extent not pow2":   mod(func(l *layout) { l.extentSize = 1536 }),
		"extent large":      mod(func(l *layout) { l.extentSize = 1 << 24 }),
		"extent 2G":         mod(func(l *layout) { l.extentSize = 1 << 31 }),
		"bad version":       func() []byte { b := mod(func(*layout) {}); b[66] = 3; return b }(),
		"bad subtype":       func() []byte { b := mod(func(*layout) {}); b[50] = 'x'; return b }(),
	}
	for name, img := range cases {
		t.Run(name, func(t *testing.T) {
			path := writeImage(t, img)
			out, err := exec.Command("qemu-img", "info", "-f", "bochs", path).CombinedOutput()
			if err == nil {
				t.Fatalf("qemu-img opened it: %s", out)
			}
			want := string(out)
			want = want[strings.LastIndex(want, ": ")+2:]
			_, err = readImage(path)
			if err == nil {
				t.Fatalf("opened; qemu-img says %s", want)
			}
			if got := err.Error(); got != strings.TrimSpace(want) {
				t.Errorf("error %q, qemu-img says %q", got, want)
			}
		})
	}
}

// readSome opens path and reads its first MiB and a piece near its end.
func readSome(path string) ([]byte, error) {
	n, err := image.Open(path, image.OpenOptions{Format: formatName, Claim: image.ClaimRead})
	if err != nil {
		return nil, err
	}
	defer n.Close()
	buf := make([]byte, min(n.Size(), 1<<20))
	if _, err := n.ReadAt(buf, 0); err != nil {
		return nil, err
	}
	tail := make([]byte, min(n.Size(), 4096))
	_, err = n.ReadAt(tail, n.Size()-int64(len(tail)))
	return buf, err
}
