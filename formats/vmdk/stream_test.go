package vmdk

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

// vmwareStream builds a streamOptimized file as VMware writes it (not as
// qemu-img does): the header's directory offset is "at the end", grain
// table and directory follow the grains behind their markers, and the
// footer repeats the header with the directory's place. It holds two
// grains: the ones given, the rest unallocated.
func vmwareStream(grains ...[]byte) []byte {
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
	f := header(gdAtEnd)
	f = append(f, sector([]byte("# Disk DescriptorFile\nversion=1\nCID=12ab\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n"))...)
	gt := make([]byte, 2048)
	for i, grain := range grains {
		var z bytes.Buffer
		w := zlib.NewWriter(&z)
		w.Write(grain)
		w.Close()
		le.PutUint32(gt[4*i:], uint32(len(f)/512))
		g := make([]byte, 12)
		le.PutUint64(g, uint64(i*128))
		le.PutUint32(g[8:], uint32(z.Len()))
		f = append(f, sector(append(g, z.Bytes()...))...)
	}
	f = append(f, marker(4, 1)...)
	gtSector := uint32(len(f) / 512)
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

// textGrains is deterministic log-like text, compressible as disks are.
func textGrains(size int) []byte {
	words := strings.Fields("the of and to in is was for on that with as by at from block image " +
		"cluster disk write read guest host error warning offset length sector zero data table")
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for line := 0; b.Len() < size; line++ {
		fmt.Fprintf(&b, "2026-11-25T12:%02d:%02d host%d qimg[%d]:", line/60%60, line%60, line%7, 1000+line%50)
		for range 8 + rng.IntN(8) {
			b.WriteString(" " + words[rng.IntN(len(words))])
		}
		fmt.Fprintf(&b, " %d\n", rng.IntN(100000))
	}
	return b.Bytes()[:size]
}

// bytesAllocated is the heap memory one call of f allocates, averaged
// over runs.
func bytesAllocated(runs int, f func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f() // warm up: pools fill
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

func streamOptimizedImage() *Image {
	return &Image{extents: []*extent{{compressed: true, marker: true, grainSectors: 128, sectors: 1 << 20}}}
}

// TestCompressClusterReusesDeflaters: a copy deflates every grain, and a
// deflater set up for each one (window and tables) cost more than the
// deflating; the result goes into the caller's memory.
func TestCompressClusterReusesDeflaters(t *testing.T) {
	img := streamOptimizedImage()
	grain := textGrains(64 << 10)
	dst := make([]byte, 0, 128<<10)
	var out []byte
	var err error
	if n := bytesAllocated(50, func() { out, err = img.CompressCluster(dst, grain) }); n > 0 {
		t.Errorf("a grain allocates %d bytes", n)
	}
	if err != nil || len(out) == 0 || &out[0] != &dst[:1][0] {
		t.Fatalf("not deflated into dst: %d bytes, %v", len(out), err)
	}
	zr, err := zlib.NewReader(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(back, grain) {
		t.Fatalf("does not inflate to the grain: %v", err)
	}
}

// TestReadGrainReusesBuffers: reading whole deflated grains (what a copy
// out of a streamOptimized image does) reuses its read buffer and
// inflater instead of allocating two grains and an inflater each time.
func TestReadGrainReusesBuffers(t *testing.T) {
	text := textGrains(128 << 10)
	grains := [][]byte{text[:64<<10], text[64<<10:]}
	n, err := openBytes(t, vmwareStream(grains...))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64<<10)
	i := 0
	read := func() {
		i = 1 - i // another grain each time: none comes from a cache
		if _, err := n.ReadAt(got, int64(i)<<16); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, grains[i]) {
			t.Fatalf("grain %d: read other data", i)
		}
	}
	if a := bytesAllocated(50, read); a > 1024 {
		t.Errorf("reading a grain allocates %d bytes", a)
	}
}

// TestDeflatedSizeNearQemu: grains are deflated at qemu's level (zlib's
// default) by a faster deflater; what it saves in time must not cost
// more than a few percent of size against qemu-img's grains.
func TestDeflatedSizeNearQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	dir := t.TempDir()
	src, ref := filepath.Join(dir, "src.raw"), filepath.Join(dir, "ref.vmdk")
	data := textGrains(4 << 20)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	qemutest.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", src, ref)
	n, err := image.Open(ref, image.OpenOptions{Format: "vmdk", Claim: image.ClaimRead})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	img := n.Driver().(*Image)
	x := img.extents[0]
	var theirs, ours int
	for off := int64(0); off < int64(len(data)); off += x.grainSize() {
		g, err := x.lookup(off)
		if err != nil || g.kind != grainCompressed {
			t.Fatalf("grain at %d: %v %v", off, g.kind, err)
		}
		var marker [12]byte
		if err := x.file.ReadPadded(marker[:], g.host); err != nil {
			t.Fatal(err)
		}
		theirs += int(binary.LittleEndian.Uint32(marker[8:]))
		out, err := img.CompressCluster(nil, data[off:off+x.grainSize()])
		if err != nil {
			t.Fatal(err)
		}
		ours += len(out)
	}
	t.Logf("deflated grains: qimg %d bytes, qemu-img %d (%.1f%%)", ours, theirs, 100*float64(ours-theirs)/float64(theirs))
	if float64(ours) > 1.05*float64(theirs) {
		t.Errorf("qimg's grains take %d bytes, qemu-img's %d: more than 5%% larger", ours, theirs)
	}
}

// Profiles of the stream's two directions:
//
//	go test -run XXX -bench Stream -cpuprofile cpu.out ./formats/vmdk
func BenchmarkStreamDeflate(b *testing.B) {
	img := streamOptimizedImage()
	grain := textGrains(64 << 10)
	dst := make([]byte, 0, 128<<10)
	b.SetBytes(int64(len(grain)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := img.CompressCluster(dst[:0:0], grain); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkStreamInflate(b *testing.B) {
	text := textGrains(128 << 10)
	n, err := openBytes(b, vmwareStream(text[:64<<10], text[64<<10:]))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(64 << 10)
	b.RunParallel(func(pb *testing.PB) {
		got := make([]byte, 64<<10)
		for i := 0; pb.Next(); i++ {
			if _, err := n.ReadAt(got, int64(i%2)<<16); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestInflateGrains: a deflated grain longer than the first read of it
// (random data does not shrink), one inflating to more than a grain,
// one whose checksum fails and one shorter than a grain read as qemu
// reads them: the short one only where the read stays inside it.
func TestInflateGrains(t *testing.T) {
	random := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	text := textGrains(64 << 10)
	n, err := openBytes(t, vmwareStream(random, text))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 128<<10)
	if _, err := n.ReadAt(got, 0); err != nil || !bytes.Equal(got, append(bytes.Clone(random), text...)) {
		t.Fatalf("read other data: %v", err)
	}

	long := append(bytes.Clone(text), 'x')
	b := vmwareStream(long)
	if _, err := openBytes(t, b); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("a grain inflating past its size: %v", err)
	}
	b = vmwareStream(text)
	// the zlib stream's adler32 ends the grain's data, before its padding
	end := 2*512 + 12 + int(binary.LittleEndian.Uint32(b[2*512+8:]))
	b[end-1] ^= 0xff
	if _, err := openBytes(t, b); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("a checksum that fails: %v", err)
	}

	n, err = openBytes(t, vmwareStream(text[:1000]))
	if err == nil {
		t.Fatal("a short grain read whole")
	}
	part := make([]byte, 512)
	if _, err := n.ReadAt(part, 0); err != nil || !bytes.Equal(part, text[:512]) {
		t.Errorf("inside a short grain: %v", err)
	}
	if _, err := n.ReadAt(part, 1024); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("past the end of a short grain: %v", err)
	}
}

// TestAppendGrainReusesRecord: the writer appends grains one at a time
// and each record (marker, data, padding) reuses one buffer rather than
// leaving a grain's size of garbage behind; the image stays one that
// qemu-img reads identically.
func TestAppendGrainReusesRecord(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	dir := t.TempDir()
	path, raw := filepath.Join(dir, "s.vmdk"), filepath.Join(dir, "s.raw")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", path, "8M")
	n, err := image.Open(path, image.OpenOptions{Format: "vmdk", Writable: true, Claim: image.ClaimWrite})
	if err != nil {
		t.Fatal(err)
	}
	img := n.Driver().(*Image)
	data := textGrains(8 << 20)
	deflated := make([][]byte, 128)
	for i := range deflated {
		if deflated[i], err = img.CompressCluster(nil, data[i<<16:(i+1)<<16]); err != nil {
			t.Fatal(err)
		}
	}
	i := 0
	write := func() {
		if err := n.WriteCompressed(int64(i)<<16, deflated[i]); err != nil {
			t.Fatal(err)
		}
		i++
	}
	write() // the first write also gives the image its new CID
	if a := bytesAllocated(100, write); a > 512 {
		t.Errorf("appending a grain allocates %d bytes", a)
	}
	for i < len(deflated) {
		write()
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	qemutest.Run(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "vmdk", raw, path)
	qemutest.Run(t, "qemu-img", "check", "-q", path)
}
