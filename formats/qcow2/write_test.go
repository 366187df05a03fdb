package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

func openWritable(t testing.TB, path string) *image.Node {
	t.Helper()
	n, err := image.Open(path, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite})
	if err != nil {
		t.Fatalf("open %s read/write: %v", path, err)
	}
	return n
}

// qemuCheck runs qemu-img check and fails on corruptions or leaks.
func qemuCheck(t testing.TB, path string) {
	t.Helper()
	out, _ := exec.Command("qemu-img", "check", "--output=json", path).Output()
	var r struct {
		CheckErrors int64 `json:"check-errors"`
		Corruptions int64 `json:"corruptions"`
		Leaks       int64 `json:"leaks"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("qemu-img check %s: %v\n%s", path, err, out)
	}
	if r.CheckErrors != 0 || r.Corruptions != 0 || r.Leaks != 0 {
		human, _ := exec.Command("qemu-img", "check", path).CombinedOutput()
		t.Fatalf("qemu-img check %s: %d errors, %d corruptions, %d leaks\n%s", path, r.CheckErrors, r.Corruptions, r.Leaks, human)
	}
}

// model applies the same operations as the image to a byte slice.
type model struct {
	data    []byte
	backing []byte // what unallocated clusters read (zeroes past its end)
	cs      int64
}

func (m *model) discard(off, n int64) {
	size := int64(len(m.data))
	start := (off + m.cs - 1) &^ (m.cs - 1)
	end := (off + n) &^ (m.cs - 1)
	if off+n >= size {
		end = size
	}
	for i := start; i < end; i++ {
		var b byte
		if i < int64(len(m.backing)) {
			b = m.backing[i]
		}
		m.data[i] = b
	}
}

type writeCase struct {
	name     string
	opts     string // qimg create options
	size     int64
	backing  bool // a qemu-made backing file with a pattern
	compress bool
	discard  bool
}

func TestWriteThenQemuCheck(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	cases := []writeCase{
		{name: "default", size: 6 << 20, compress: true, discard: true},
		{name: "v2", opts: "compat=0.10", size: 5 << 20, compress: true, discard: true},
		{name: "512-rb1", opts: "cluster_size=512,refcount_bits=1", size: 3 << 20, discard: true},
		{name: "512-rb64", opts: "cluster_size=512,refcount_bits=64", size: 3 << 20, compress: true, discard: true},
		{name: "4k-zstd", opts: "cluster_size=4096,compression_type=zstd", size: 4 << 20, compress: true, discard: true},
		{name: "2M", opts: "cluster_size=2M", size: 12 << 20, compress: true, discard: true},
		{name: "extl2", opts: "extended_l2=on", size: 6 << 20, compress: true, discard: true},
		{name: "extl2-backing", opts: "extended_l2=on,cluster_size=32k", size: 6 << 20, backing: true, compress: true, discard: true},
		{name: "backing", opts: "cluster_size=4096", size: 6 << 20, backing: true, discard: true},
		{name: "lazy", opts: "lazy_refcounts=on", size: 4 << 20, discard: true},
		{name: "prealloc", opts: "preallocation=metadata,cluster_size=16k", size: 4 << 20, discard: true},
		{name: "datafile", opts: "data_file=DIR/img.data", size: 4 << 20},
		{name: "datafile-raw", opts: "data_file=DIR/img.data,data_file_raw=on", size: 4 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { writeScenario(t, c) })
	}
}

func writeScenario(t *testing.T, c writeCase) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img.qcow2")
	opts := strings.ReplaceAll(c.opts, "DIR", dir)
	m := &model{data: make([]byte, c.size)}
	if c.backing {
		base := filepath.Join(dir, "base.qcow2")
		qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, fmt.Sprint(c.size-1<<20))
		qemuIO(t, base, "write -P 0xbb 0 100k", "write -P 0xcc 1m 1500k")
		m.backing = rawOf(t, base)
		copy(m.data, m.backing)
		if opts != "" {
			opts += ","
		}
		opts += "backing_file=base.qcow2,backing_fmt=qcow2"
	}
	createImage(t, img, opts, c.size)
	n := openWritable(t, img)
	q := n.Driver().(*Image)
	m.cs = q.clusterSize
	cs := q.clusterSize
	rng := rand.New(rand.NewSource(int64(len(c.name)) + seedOffset))
	fill := func(p []byte) {
		v := byte(rng.Intn(255) + 1)
		for i := range p {
			p[i] = v + byte(i/4096)
		}
	}
	for i := 0; i < 60; i++ {
		off := rng.Int63n(c.size)
		length := min(c.size-off, 1+rng.Int63n(3*cs+5000))
		switch op := rng.Intn(10); {
		case op < 6:
			p := make([]byte, length)
			fill(p)
			if _, err := n.WriteAt(p, off); err != nil {
				t.Fatalf("write [%d,+%d): %v", off, length, err)
			}
			copy(m.data[off:], p)
		case op < 8:
			if err := n.WriteZeroes(off, length, op == 7); err != nil {
				t.Fatalf("write zeroes [%d,+%d): %v", off, length, err)
			}
			clear(m.data[off : off+length])
		case op == 8 && c.discard:
			if err := n.Discard(off, length); err != nil {
				t.Fatalf("discard [%d,+%d): %v", off, length, err)
			}
			m.discard(off, length)
		case op == 9 && c.compress:
			off &^= cs - 1
			p := make([]byte, min(cs, c.size-off))
			for j := range p {
				p[j] = byte(j / 1000)
			}
			cw := n.Driver().(image.CompressedWriter)
			z, err := cw.CompressCluster(nil, p)
			if err != nil || z == nil {
				t.Fatalf("compress: %v", err)
			}
			if err := n.WriteCompressed(off, z); err != nil {
				t.Fatalf("write compressed at %d: %v", off, err)
			}
			copy(m.data[off:], p)
		}
	}
	// read back through qimg while still open
	got := make([]byte, c.size)
	if _, err := n.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, m.data); i >= 0 {
		t.Fatalf("qimg reads byte %d as %#x, want %#x", i, got[i], m.data[i])
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, img)
	if i := firstDiff(rawOf(t, img), m.data); i >= 0 {
		t.Fatalf("qemu reads byte %d differently", i)
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestWriteIntoQemuImage writes with qimg into an image that qemu-io
// wrote (compressed and zero clusters, a snapshot sharing clusters), then
// checks with qemu-img and qemu-io.
func TestWriteIntoQemuImage(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	img := filepath.Join(dir, "img.qcow2")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "4M")
	qemuIO(t, img, "write -P 1 0 1m", "write -c -P 2 1m 64k", "write -z 2m 64k")
	qemutest.Run(t, "qemu-img", "snapshot", "-c", "snap", img)
	n := openWritable(t, img)
	p := bytes.Repeat([]byte{7}, 10000)
	for _, off := range []int64{100, 1<<20 + 3000, 2<<20 + 5, 3 << 20} {
		if _, err := n.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, img)
	out := qemutest.Run(t, "qemu-io", "-f", "qcow2", "-c", "read -P 7 100 10000", "-c", "read -P 1 10100 10000",
		"-c", "read -P 7 1051576 10000", "-c", "read -P 2 1061576 1000", "-c", "read -P 7 2097157 10000",
		"-c", "read -P 0 2107157 1000", "-c", "read -P 7 3m 10000", img)
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io: %s", out)
	}
	// the snapshot still has the old data
	qemutest.Run(t, "qemu-img", "snapshot", "-a", "snap", img)
	out = qemutest.Run(t, "qemu-io", "-f", "qcow2", "-c", "read -P 1 0 1m", "-c", "read -P 2 1m 64k", img)
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("snapshot changed: %s", out)
	}
}

// TestConcurrentWriters writes disjoint regions from many goroutines while
// others read, as the copy engine does.
func TestConcurrentWriters(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	img := filepath.Join(t.TempDir(), "img.qcow2")
	createImage(t, img, "cluster_size=4096", 16<<20)
	n := openWritable(t, img)
	const workers = 8
	const chunk = 64 << 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*2)
	for w := 0; w < workers; w++ {
		wg.Add(2)
		go func(w int) {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte(w + 1)}, chunk)
			for off := int64(w * chunk); off < 16<<20; off += workers * chunk {
				if _, err := n.WriteAt(p, off); err != nil {
					errs <- err
					return
				}
			}
		}(w)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			for off := int64(0); off < 16<<20; off += chunk {
				if _, err := n.ReadAt(buf, off); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, img)
	raw := rawOf(t, img)
	for off := 0; off < len(raw); off += chunk {
		want := byte((off/chunk)%workers + 1)
		if raw[off] != want || raw[off+chunk-1] != want {
			t.Fatalf("chunk at %d: %#x, want %#x", off, raw[off], want)
		}
	}
}

// TestOverlapRefused: a write through an L2 entry that points at
// metadata is refused and the image marked corrupt.
func TestOverlapRefused(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	for _, target := range []string{"refcount table", "active L2 table", "refcount block"} {
		img := filepath.Join(t.TempDir(), "img.qcow2")
		qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
		qemuIO(t, img, "write -P 1 0 64k")
		// point guest cluster 0 at metadata
		b := readFile(t, img)
		l2 := firstL2(b)
		host := map[string]uint64{"refcount table": 0x10000, "refcount block": 0x20000, "active L2 table": uint64(l2)}[target]
		put64(b, l2, host|oflagCopied)
		writeTestFile(t, img, b)
		n := openWritable(t, img)
		_, err := n.WriteAt([]byte{1, 2, 3}, 0)
		n.Close()
		if err == nil || !strings.Contains(err.Error(), "Preventing invalid write on metadata (overlaps with "+target+")") {
			t.Fatalf("write over %s: %v", target, err)
		}
		out, _ := exec.Command("qemu-img", "info", img).CombinedOutput()
		if !strings.Contains(string(out), "corrupt: true") {
			t.Fatalf("image not marked corrupt:\n%s", out)
		}
	}
}

// seedOffset varies the random operations (QIMG_QCOW2_SEED).
var seedOffset = func() int64 {
	var n int64
	fmt.Sscan(os.Getenv("QIMG_QCOW2_SEED"), &n)
	return n
}()

// TestDirtyImageRepaired: an image left dirty by a process using lazy
// refcounts is repaired when qimg opens it read/write.
func TestDirtyImageRepaired(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	img := filepath.Join(t.TempDir(), "img.qcow2")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on,cluster_size=4096", img, "8M")
	exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 3 0 3m", "-c", "write -P 4 5m 1m", "-c", "abort", img).Run()
	n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Claim: image.ClaimRead})
	if err != nil {
		t.Fatal(err)
	}
	info, err := image.CollectInfo(n)
	n.Close()
	if err != nil || info.DirtyFlag == nil || !*info.DirtyFlag {
		t.Fatalf("dirty flag not reported: %v", err)
	}
	n = openWritable(t, img)
	if _, err := n.WriteAt([]byte{9}, 7<<20); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, img)
	out := qemutest.Run(t, "qemu-io", "-f", "qcow2", "-c", "read -P 3 0 3m", "-c", "read -P 4 5m 1m", "-c", "read -P 9 7m 1", img)
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("data lost: %s", out)
	}
	if out := qemutest.Run(t, "qemu-img", "info", img); strings.Contains(out, "cleanly shut down: no") {
		t.Fatalf("still dirty:\n%s", out)
	}
}

// TestCheckMatchesQemu compares qimg's check counts with qemu-img's on a
// clean image, an image with leaks and one with refcounts too low.
func TestCheckMatchesQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	img := filepath.Join(dir, "img.qcow2")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "8M")
	qemuIO(t, img, "write -P 1 0 1m", "write -c -P 2 2m 64k", "write -P 3 3m 5k", "write -z 4m 8k")
	qemutest.Run(t, "qemu-img", "snapshot", "-c", "s", img)
	qemuIO(t, img, "write -P 5 0 8k")
	compare := func(name string) {
		t.Helper()
		out, _ := exec.Command("qemu-img", "check", "--output=json", img).Output()
		var want image.CheckResult
		if err := json.Unmarshal(out, &want); err != nil {
			t.Fatalf("%s: %v: %s", name, err, out)
		}
		n, err := image.Open(img, image.OpenOptions{Format: "qcow2", Claim: image.ClaimRead, NoBacking: true})
		if err != nil {
			t.Fatal(err)
		}
		got, err := image.Check(n, 0, io.Discard)
		n.Close()
		if err != nil {
			t.Fatal(err)
		}
		got.Filename, want.Filename = "", ""
		got.Format, want.Format = "", ""
		if *got != want {
			t.Fatalf("%s: qimg %+v, qemu-img %+v", name, *got, want)
		}
	}
	compare("clean")
	b := readFile(t, img)
	// leak: a refcount of 1 for a cluster past everything
	rt := int(get64(b, offRefcountTableOffset))
	blk := int(get64(b, rt))
	binary.BigEndian.PutUint16(b[blk+2*600:], 1)
	// corruption: refcount 0 for a data cluster
	l2 := firstL2(b)
	data := int(get64(b, l2+8) & l2OffsetMask)
	binary.BigEndian.PutUint16(b[blk+2*(data/4096):], 0)
	writeTestFile(t, img, b)
	compare("damaged")
}

// TestConcurrentSameCluster writes the halves (and quarters, with
// subclusters) of the same clusters from different goroutines: no write
// may be lost to another's copy-on-write.
func TestConcurrentSameCluster(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	for _, opts := range []string{"cluster_size=65536", "cluster_size=65536,extended_l2=on"} {
		img := filepath.Join(t.TempDir(), "img.qcow2")
		createImage(t, img, opts, 8<<20)
		n := openWritable(t, img)
		const parts = 4
		const piece = 65536 / parts
		var wg sync.WaitGroup
		for w := 0; w < parts; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				p := bytes.Repeat([]byte{byte(w + 1)}, piece)
				for c := int64(0); c < 128; c++ {
					if _, err := n.WriteAt(p, c*65536+int64(w*piece)); err != nil {
						t.Error(err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		qemuCheck(t, img)
		raw := rawOf(t, img)
		for c := 0; c < 128; c++ {
			for w := 0; w < parts; w++ {
				if b := raw[c*65536+w*piece]; b != byte(w+1) {
					t.Fatalf("%s: cluster %d part %d lost (%#x)", opts, c, w, b)
				}
			}
		}
	}
}

// TestGrowFromEmpty grows an image created with size 0 (no L1 table) and
// one with data, writes past the old end, and lets qemu check both.
func TestGrowFromEmpty(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	for _, c := range []struct {
		opts     string
		from, to int64
		prealloc image.Prealloc
	}{
		{"", 0, 3 << 20, image.PreallocOff},
		{"cluster_size=512", 100 << 10, 9 << 20, image.PreallocMetadata},
		{"cluster_size=4096,extended_l2=off", 1 << 20, 5 << 20, image.PreallocFalloc},
	} {
		img := filepath.Join(t.TempDir(), "img.qcow2")
		createImage(t, img, c.opts, c.from)
		n := openWritable(t, img)
		if c.from > 0 {
			if _, err := n.WriteAt(bytes.Repeat([]byte{1}, int(c.from)), 0); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.Truncate(c.to, c.prealloc); err != nil {
			t.Fatalf("%s: grow to %d: %v", c.opts, c.to, err)
		}
		if _, err := n.WriteAt([]byte{7, 7, 7}, c.to-3); err != nil {
			t.Fatal(err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		qemuCheck(t, img)
		raw := rawOf(t, img)
		if int64(len(raw)) != c.to || raw[c.to-1] != 7 || c.from > 0 && raw[c.from-1] != 1 || raw[c.from] != 0 {
			t.Fatalf("%s: wrong content after growing", c.opts)
		}
	}
}

// TestShrink shrinks images with data beyond, in and across L2 tables.
func TestShrink(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	for _, c := range []struct {
		opts     string
		from, to int64
	}{
		{"cluster_size=512", 4 << 20, 1<<20 + 1024},
		{"", 8 << 20, 3 << 20},
		{"extended_l2=on", 8 << 20, 100352},
	} {
		img := filepath.Join(t.TempDir(), "img.qcow2")
		createImage(t, img, c.opts, c.from)
		n := openWritable(t, img)
		if _, err := n.WriteAt(bytes.Repeat([]byte{5}, int(c.from)), 0); err != nil {
			t.Fatal(err)
		}
		if err := n.Truncate(c.to, image.PreallocOff); err != nil {
			t.Fatalf("%s: shrink: %v", c.opts, err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		qemuCheck(t, img)
		raw := rawOf(t, img)
		if int64(len(raw)) != c.to || raw[c.to-1] != 5 {
			t.Fatalf("%s: size %d, want %d", c.opts, len(raw), c.to)
		}
		// growing again shows zeroes, not the old data
		n = openWritable(t, img)
		if err := n.Truncate(c.from, image.PreallocOff); err != nil {
			t.Fatal(err)
		}
		n.Close()
		qemuCheck(t, img)
		raw = rawOf(t, img)
		cs := int64(65536)
		if strings.Contains(c.opts, "512") {
			cs = 512
		}
		end := (c.to + cs - 1) &^ (cs - 1)
		for i := end; i < c.from; i++ {
			if raw[i] != 0 {
				t.Fatalf("%s: byte %d is %#x after shrinking and growing", c.opts, i, raw[i])
			}
		}
	}
}

// TestExtendedL2SubclusterHoles: a write to part of a new cluster with
// extended L2 entries writes only its subclusters, as qemu does: the file
// ends after them, and later writes into the cluster fill it in place.
func TestExtendedL2SubclusterHoles(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	img := filepath.Join(dir, "img.qcow2")
	ref := filepath.Join(dir, "ref.qcow2")
	createImage(t, img, "extended_l2=on", 4<<20)
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", ref, "4M")
	qemuIO(t, ref, "write -P 1 64k 4k")
	n := openWritable(t, img)
	p := bytes.Repeat([]byte{1}, 4096)
	if _, err := n.WriteAt(p, 64<<10); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	size := func(path string) int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	if got, want := size(img), size(ref); got != want {
		t.Errorf("file size after a 4k write into a new cluster: %d, qemu's %d", got, want)
	}
	qemuCheck(t, img)
	n = openWritable(t, img)
	q := []byte{2, 2, 2}
	if _, err := n.WriteAt(q, 64<<10+40<<10); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, img)
	want := make([]byte, 4<<20)
	copy(want[64<<10:], p)
	copy(want[64<<10+40<<10:], q)
	if i := firstDiff(rawOf(t, img), want); i >= 0 {
		t.Fatalf("qemu reads byte %d differently", i)
	}
}
