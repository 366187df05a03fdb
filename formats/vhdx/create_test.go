package vhdx

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"qimg/create"
	"qimg/image"
	"qimg/internal/qemutest"
)

// createImage creates an image with qimg's create package.
func createImage(t testing.TB, path, opts string, size int64) {
	t.Helper()
	o, err := image.ParseOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	p, err := create.Prepare(create.Request{Filename: path, Format: "vhdx", Size: size, Options: o})
	if err != nil {
		t.Fatalf("prepare %s: %v", opts, err)
	}
	if err := p.Run(); err != nil {
		t.Fatalf("create %s: %v", opts, err)
	}
}

// randomFields zeroes what QEMU makes up anew for every image: the
// headers' sequence numbers, GUIDs and checksums, and the page 83 GUID.
func randomFields(t testing.TB, b []byte) {
	t.Helper()
	for _, off := range []int{header1Offset, header2Offset} {
		clear(b[off+4 : off+48])
	}
	s := &sparseFile{size: int64(len(b)), pieces: []piece{{off: 0, data: b}}}
	rt := make([]byte, regionTableSize)
	s.ReadAt(rt, regionTableOffset)
	var rs regions
	_, meta, err := parseRegionTable(rt, &rs)
	if err != nil {
		t.Fatal(err)
	}
	clear(b[meta.offset+64<<10+16 : meta.offset+64<<10+32])
}

// TestCreateMatchesQemu compares images created by qimg and qemu-img
// byte for byte, but for the fields QEMU draws at random.
func TestCreateMatchesQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	cases := []struct {
		opts string
		size int64
	}{
		{"", 100 << 20},
		{"", 1000},
		{"subformat=fixed", 10 << 20},
		{"block_state_zero=off", 100 << 20},
		{"subformat=fixed,block_state_zero=off", 3 << 20},
		{"block_size=1M,log_size=3M", 5 << 30},
		{"block_size=1.5M,log_size=1.5M", 64 << 20},
	}
	dir := t.TempDir()
	for _, c := range cases {
		q, m := filepath.Join(dir, "q.vhdx"), filepath.Join(dir, "m.vhdx")
		os.Remove(q)
		os.Remove(m)
		args := []string{"create", "-q", "-f", "vhdx"}
		if c.opts != "" {
			args = append(args, "-o", c.opts)
		}
		qemutest.Run(t, "qemu-img", append(args, q, itoa(c.size))...)
		createImage(t, m, c.opts, c.size)
		qb, mb := readHead(t, q), readHead(t, m)
		randomFields(t, qb)
		randomFields(t, mb)
		if !bytes.Equal(qb, mb) {
			for i := range qb {
				if qb[i] != mb[i] {
					t.Errorf("%q %d: first difference at %#x: qemu %#x, qimg %#x", c.opts, c.size, i, qb[i], mb[i])
					break
				}
			}
		}
		if qs, ms := fileSize(t, q), fileSize(t, m); qs != ms {
			t.Errorf("%q %d: file size qemu %d, qimg %d", c.opts, c.size, qs, ms)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// readHead reads the metadata part of an image: its first 16 MiB.
func readHead(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 16<<20)
	n, _ := f.ReadAt(b, 0)
	return b[:n]
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
