package vmdk

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"qimg/internal/qemutest"
)

// vmwareStream builds a streamOptimized file as VMware writes it (not as
// qemu-img does): the header's directory offset is "at the end", grain
// table and directory follow the grains behind their markers, and the
// footer repeats the header with the directory's place.
func vmwareStream(grain0 []byte) []byte {
	le := binary.LittleEndian
	sector := func(b []byte) []byte { return append(b, make([]byte, (512-len(b)%512)%512)...) }
	header := func(gd uint64) []byte {
		h := make([]byte, 512)
		copy(h, magicKDMV)
		le.PutUint32(h[4:], 3)
		le.PutUint32(h[8:], 1|1<<16|flagMarker)
		le.PutUint64(h[12:], 256) // two grains
		le.PutUint64(h[20:], 128)
		le.PutUint64(h[28:], 1)
		le.PutUint64(h[36:], 1)
		le.PutUint32(h[44:], 512)
		le.PutUint64(h[56:], gd)
		le.PutUint64(h[64:], 2)
		copy(h[73:], "\n \r\n")
		le.PutUint16(h[77:], compressZlib)
		return h
	}
	marker := func(val uint64, typ uint32) []byte {
		m := make([]byte, 512)
		le.PutUint64(m, val)
		le.PutUint32(m[12:], typ)
		return m
	}
	var z bytes.Buffer
	w := zlib.NewWriter(&z)
	w.Write(grain0)
	w.Close()
	f := header(gdAtEnd)
	f = append(f, sector([]byte("# Disk DescriptorFile\nversion=1\nCID=12ab\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n"))...)
	g := make([]byte, 12)
	le.PutUint64(g, 0)
	le.PutUint32(g[8:], uint32(z.Len()))
	f = append(f, sector(append(g, z.Bytes()...))...)
	f = append(f, marker(4, 1)...)
	gtSector := uint32(len(f) / 512)
	gt := make([]byte, 2048)
	le.PutUint32(gt, 2)
	f = append(f, gt...)
	f = append(f, marker(1, 2)...)
	gdSector := uint64(len(f) / 512)
	gd := make([]byte, 512)
	le.PutUint32(gd, gtSector)
	f = append(f, gd...)
	f = append(f, marker(1, 3)...)
	f = append(f, header(gdSector)...)
	return append(f, make([]byte, 512)...) // end of stream
}

func TestVMwareStream(t *testing.T) {
	grain0 := bytes.Repeat([]byte("vmware grain "), 65536/13+1)[:65536]
	b := vmwareStream(grain0)
	n, err := openBytes(t, b)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 131072)
	if _, err := n.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Clone(grain0), make([]byte, 65536)...)
	if !bytes.Equal(got, want) {
		t.Fatal("guest data differs")
	}
	if !qemutest.Have("qemu-img") {
		return
	}
	dir := t.TempDir()
	src, out := filepath.Join(dir, "s.vmdk"), filepath.Join(dir, "out.raw")
	os.WriteFile(src, b, 0o644)
	if o, err := exec.Command("qemu-img", "convert", "-O", "raw", src, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, o)
	}
	ref, _ := os.ReadFile(out)
	if !bytes.Equal(ref, want) {
		t.Fatal("qemu-img reads other data than qimg")
	}
}
