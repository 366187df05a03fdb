package cloop

import (
	"bytes"
	"encoding/binary"
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
	return drivertest.WriteImage(t, "img.cloop", b)
}

func readImage(path string) ([]byte, error) { return drivertest.ReadImage(path, formatName) }

// qemuRead is what qemu-img convert -O raw reads, or its error line.
func qemuRead(t *testing.T, path string) ([]byte, string) {
	out := filepath.Join(t.TempDir(), "out.raw")
	msg, err := exec.Command("qemu-img", "convert", "-f", "cloop", "-O", "raw", path, out).CombinedOutput()
	if err != nil {
		s := strings.TrimSpace(string(msg))
		return nil, s[strings.LastIndex(s, ": ")+2:]
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b, ""
}

// TestReadAsQemu: generated images read as qemu-img reads them.
func TestReadAsQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	for _, tc := range []struct{ bs, n uint32 }{{512, 1}, {4096, 7}, {65536, 3}, {1024, 0}} {
		img, data := generate(tc.bs, tc.n, int64(tc.n))
		path := writeImage(t, img)
		got, err := readImage(path)
		if err != nil {
			t.Fatal(err)
		}
		want, msg := qemuRead(t, path)
		if msg != "" {
			t.Fatalf("qemu-img: %s", msg)
		}
		if !bytes.Equal(got, want) || !bytes.Equal(got, data) {
			t.Fatalf("block size %d: data differs from qemu-img's", tc.bs)
		}
	}
}

// TestBadImages: malformed headers, tables and blocks fail as in qemu-img,
// in its words.
func TestBadImages(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	good, _ := generate(4096, 4, 1)
	patch := func(off int, v uint64, width int) []byte {
		b := bytes.Clone(good)
		if width == 4 {
			binary.BigEndian.PutUint32(b[off:], uint32(v))
		} else {
			binary.BigEndian.PutUint64(b[off:], v)
		}
		return b
	}
	cases := map[string][]byte{
		"block size odd":        patch(128, 1000, 4),
		"block size zero":       patch(128, 0, 4),
		"block size huge":       patch(128, 128<<20, 4),
		"n_blocks overflow":     patch(132, 0x20000000, 4),
		"too many offsets":      patch(132, 0x10000000, 4),
		"table past the end":    patch(132, 1000, 4),
		"not monotonic":         patch(tableStart+16, 10, 8),
		"block too big":         patch(tableStart+32, 1<<40, 8),
		"truncated block":       good[:len(good)-10],
		"corrupt block":         patch(tableStart+8, uint64(tableStart+8*5+1), 8),
		"short header":          good[:100],
		"table cut in an entry": good[:tableStart+12],
	}
	for name, img := range cases {
		t.Run(name, func(t *testing.T) {
			path := writeImage(t, img)
			want, msg := qemuRead(t, path)
			got, err := readImage(path)
			t.Logf("qemu-img: %q", msg)
			if msg == "" {
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("qemu-img reads it, qimg: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("read; qemu-img says %s", msg)
			}
			if g := image.Strerror(err); g != msg {
				t.Errorf("error %q, qemu-img says %q", g, msg)
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
