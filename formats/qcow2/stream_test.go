package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

// onceFile is a write-once protocol node in memory with an upload's rule
// of order: bytes are taken in parts; a write may land in the first part
// (kept in memory) or in the part before the last one written or later,
// never further back. An upload's parts are 5 MiB at least, more than
// two of qcow2's largest clusters; the tests take smaller ones, so that
// a small image spans many.
type onceFile struct {
	part     int64
	data     []byte
	size     int64
	lastPart int64 // highest part written
	complete bool
}

func init() {
	next := func(string, image.ProtocolOptions) (image.Driver, error) { return onceFiles.next, nil }
	image.Register(&image.Format{Name: "testonce", Protocol: true, OpenProtocol: next, CreateProtocol: next})
}

// onceFiles hands the next created node its driver.
var onceFiles struct{ next *onceFile }

func (f *onceFile) Size() int64  { return f.size }
func (f *onceFile) Close() error { return nil }
func (f *onceFile) Complete() error {
	f.complete = true
	return nil
}

func (f *onceFile) BlockStatus(off, length int64) (image.Extent, error) {
	return image.Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: off}, nil
}

func (f *onceFile) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	copy(p, f.data[min(off, int64(len(f.data))):])
	return len(p), nil
}

func (f *onceFile) Truncate(size int64, _ image.Prealloc) error {
	f.size = size
	if int64(len(f.data)) > size {
		f.data = f.data[:size]
	}
	return nil
}

func (f *onceFile) WriteAt(p []byte, off int64) (int, error) {
	if f.complete {
		return 0, fmt.Errorf("write after completion")
	}
	first, last := off/f.part, (off+int64(len(p))-1)/f.part
	if first != 0 && first < f.lastPart-1 {
		return 0, fmt.Errorf("write at %d in part %d after part %d was written: out of file order", off, first, f.lastPart)
	}
	if off+int64(len(p)) > f.size {
		return 0, fmt.Errorf("write at %d beyond the size %d", off, f.size)
	}
	f.lastPart = max(f.lastPart, last)
	if end := off + int64(len(p)); end > int64(len(f.data)) {
		f.data = append(f.data, make([]byte, end-int64(len(f.data)))...)
	}
	copy(f.data[off:], p)
	return len(p), nil
}

// newStreamTarget creates an image with the create options opts onto a
// fresh write-once node and opens it for writing, as convert does.
func newStreamTarget(t *testing.T, size, part int64, opts string) (*streamImage, *onceFile) {
	t.Helper()
	f := &onceFile{part: part}
	onceFiles.next = f
	node, err := image.CreateProtocolAs("testonce", "once", "test", image.ClaimCreate, nil)
	if err != nil {
		t.Fatal(err)
	}
	var o image.Options
	for _, kv := range strings.Split(opts, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			o.Set(k, v)
		}
	}
	if err := Create(&image.CreateContext{File: node, Filename: "once", Size: size, Options: o, Continued: true}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(&image.OpenContext{File: node, Filename: "once", Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	return d.(*streamImage), f
}

// TestStreamWritesInFileOrder writes data, compressed clusters and zero
// runs in guest order: every byte goes out in file order but for the
// first part, and qemu-img finds the image clean and equal to the data.
func TestStreamWritesInFileOrder(t *testing.T) {
	cases := []struct {
		opts       string
		size, part int64
	}{
		{"cluster_size=512", 3<<20 + 512, 4 << 10},
		{"cluster_size=4096,refcount_bits=1", 3<<20 + 512, 16 << 10},
		{"", 3<<20 + 512, 160 << 10},
		{"extended_l2=on", 3<<20 + 512, 160 << 10},
		{"compat=0.10", 3<<20 + 512, 160 << 10},
		{"compression_type=zstd,refcount_bits=64", 3<<20 + 512, 160 << 10},
		{"cluster_size=2M", 21<<20 + 512, 5 << 20},
	}
	for _, c := range cases {
		t.Run(c.opts, func(t *testing.T) {
			size := c.size
			s, f := newStreamTarget(t, size, c.part, c.opts)
			want := make([]byte, size)
			for off := int64(0); off < size; {
				n := min(s.cs, size-off)
				chunk := bytes.Repeat([]byte{byte(off/s.cs) | 1}, int(n))
				switch (off / s.cs) % 4 {
				case 0: // left out: reads as zeroes
				case 1:
					if _, err := s.WriteAt(chunk[:n/2], off+n/2); err != nil {
						t.Fatal(err)
					}
					copy(want[off+n/2:], chunk[:n/2])
				case 2:
					c, err := s.CompressCluster(nil, chunk)
					if err != nil || c == nil {
						t.Fatalf("CompressCluster: %v", err)
					}
					if err := s.WriteCompressed(off, c); err != nil {
						t.Fatal(err)
					}
					copy(want[off:], chunk)
				case 3:
					if _, err := s.WriteAt(chunk, off); err != nil {
						t.Fatal(err)
					}
					if err := s.WriteZeroes(off, n/4, true); err != nil {
						t.Fatal(err)
					}
					copy(want[off:], chunk)
					clear(want[off : off+n/4])
				}
				off += n
			}
			if err := s.Complete(); err != nil {
				t.Fatal(err)
			}
			if !f.complete {
				t.Fatal("the node was not completed")
			}
			if int64(len(f.data)) > f.size {
				t.Errorf("%d bytes written past the final size %d", int64(len(f.data))-f.size, f.size)
			}
			checkWithQemu(t, f, want)
		})
	}
}

// checkWithQemu writes the image to a file and has qemu-img check it and
// compare it with want.
func checkWithQemu(t *testing.T, f *onceFile, want []byte) {
	qemutest.Need(t, "qemu-img")
	dir := t.TempDir()
	img, raw := filepath.Join(dir, "img.qcow2"), filepath.Join(dir, "want.raw")
	data := append(f.data, make([]byte, f.size-int64(len(f.data)))...)
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(raw, want, 0o600); err != nil {
		t.Fatal(err)
	}
	if leaks := qemutest.CheckNoCorruption(t, img, "after the stream"); leaks != 0 {
		t.Errorf("%d leaked clusters", leaks)
	}
	qemutest.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, img)
}

// TestStreamRefusesRewrites: a compressed cluster is written once; a
// cluster written uncompressed is not written again compressed.
func TestStreamRefusesRewrites(t *testing.T) {
	s, _ := newStreamTarget(t, 1<<20, 5<<20, "")
	c, err := s.CompressCluster(nil, make([]byte, s.cs))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteCompressed(0, c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt([]byte{1}, 0); err == nil {
		t.Error("a write into a compressed cluster was accepted")
	}
	if _, err := s.WriteAt([]byte{1}, s.cs); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteCompressed(s.cs, c); err == nil {
		t.Error("a compressed write over a written cluster was accepted")
	}
}

// TestStreamLargeL1: the empty image create made has an L1 table larger
// than the first parts; the writer that follows drops only what create
// wrote, so the data that follows still goes out in file order.
func TestStreamLargeL1(t *testing.T) {
	const size = 1 << 30 // a 256 KiB L1 table with 512-byte clusters
	s, f := newStreamTarget(t, size, 4<<10, "cluster_size=512")
	want := make([]byte, size)
	for off := int64(0); off < 64<<10; off += 4 << 10 {
		b := bytes.Repeat([]byte{byte(off>>12) + 1}, 2<<10)
		if _, err := s.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], b)
	}
	if err := s.Complete(); err != nil {
		t.Fatal(err)
	}
	checkWithQemu(t, f, want)
}
