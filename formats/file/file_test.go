//go:build linux

package file

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"qimg/image"
	"qimg/internal/qemutest"
)

func mustCache(t *testing.T, name string) image.CacheMode {
	t.Helper()
	c, err := image.ParseCacheMode(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openT(t *testing.T, path string, writable bool, cache string) *File {
	t.Helper()
	drv, err := Open(path, image.ProtocolOptions{Writable: writable, Cache: mustCache(t, cache)})
	if err != nil {
		t.Fatal(err)
	}
	d := drv.(*File)
	t.Cleanup(func() { d.Close() })
	return d
}

func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// fdFlags reads the open flags of fd from /proc/self/fdinfo.
func fdFlags(t *testing.T, fd int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		t.Skipf("no fdinfo: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatal("no flags in fdinfo")
	return 0
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	_, err := Open(missing, image.ProtocolOptions{Cache: image.CacheWriteback})
	if want := fmt.Sprintf("Could not open '%s': No such file or directory", missing); err == nil || err.Error() != want {
		t.Errorf("missing file: got %v, want %q", err, want)
	}
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("missing file: %v is not ENOENT", err)
	}
	_, err = Open(dir, image.ProtocolOptions{Cache: image.CacheWriteback})
	if want := fmt.Sprintf("'file' driver requires '%s' to be a regular file", dir); err == nil || err.Error() != want {
		t.Errorf("directory: got %v, want %q", err, want)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("a failed open created the file")
	}
	_, err = Open("/dev/null", image.ProtocolOptions{Cache: image.CacheWriteback})
	if err == nil || !strings.Contains(err.Error(), "to be a regular file") {
		t.Errorf("character device: %v", err)
	}
}

func TestIdentity(t *testing.T) {
	path := writeFile(t, make([]byte, 4096))
	a := openT(t, path, false, "writeback")
	b := openT(t, path, true, "none")
	if a.Identity() != b.Identity() {
		t.Errorf("one file, two identities: %s %s", a.Identity(), b.Identity())
	}
	other := openT(t, writeFile(t, nil), false, "writeback")
	if other.Identity() == a.Identity() {
		t.Error("two files, one identity")
	}
}

// TestCacheModes checks the open flags of each -t mode and that unsafe
// ignores flushes.
func TestCacheModes(t *testing.T) {
	path := writeFile(t, make([]byte, 8192))
	for _, tc := range []struct {
		mode           string
		direct, dsync  bool
		flushIsIgnored bool
	}{
		{"writeback", false, false, false},
		{"none", true, false, false},
		{"off", true, false, false},
		{"writethrough", false, true, false},
		{"directsync", true, true, false},
		{"unsafe", false, false, true},
	} {
		d := openT(t, path, true, tc.mode)
		fl := fdFlags(t, d.fd)
		// the portable build has no O_DIRECT: the page cache stays
		if got, want := fl&syscall.O_DIRECT != 0, tc.direct && directOpenFlag != 0; got != want {
			t.Errorf("%s: O_DIRECT %v, want %v", tc.mode, got, want)
		}
		if got := fl&syscall.O_DSYNC != 0; got != tc.dsync {
			t.Errorf("%s: O_DSYNC %v, want %v", tc.mode, got, tc.dsync)
		}
		if tc.direct && needsAlignment != (d.align != 0) {
			t.Errorf("%s: alignment %d", tc.mode, d.align)
		}
		if got := d.cache.NoFlush; got != tc.flushIsIgnored {
			t.Errorf("%s: flush ignored %v", tc.mode, got)
		}
		if err := d.Flush(); err != nil {
			t.Errorf("%s: flush: %v", tc.mode, err)
		}
		d.Close()
	}
	if _, err := image.ParseCacheMode("bogus"); err == nil || err.Error() != "Invalid cache option: bogus" {
		t.Errorf("bogus cache mode: %v", err)
	}
}

// TestDirectUnaligned drives a file opened with O_DIRECT with requests of
// every alignment and checks it against a model, through buffers that are
// themselves misaligned in memory.
func TestDirectUnaligned(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const size = 3*maxBounce + 10000 // not a multiple of the alignment
	model := randBytes(r, size)
	path := writeFile(t, model)
	d := openT(t, path, true, "none")
	if !needsAlignment {
		d.align = 4096 // no O_DIRECT here: the bounce paths through the page cache
	}
	if d.align != 4096 {
		t.Fatalf("alignment %d, want 4096", d.align)
	}
	backing := make([]byte, 2*maxBounce+8192+1)
	for i := 0; i < 300; i++ {
		var off, n int64
		switch i % 4 {
		case 0: // small, anywhere
			off, n = r.Int64N(size), r.Int64N(9000)+1
		case 1: // large, crossing bounce windows
			off, n = r.Int64N(size), r.Int64N(2*maxBounce)+1
		case 2: // aligned offset and length, maybe misaligned memory
			off, n = r.Int64N(size/4096)*4096, (r.Int64N(64)+1)*4096
		case 3: // the unaligned tail of the file
			off, n = size-r.Int64N(5000)-1, r.Int64N(5000)+1
		}
		n = min(n, size-off)
		shift := r.IntN(2) * (1 + r.IntN(4095))
		p := backing[shift : shift+int(n)]
		if r.IntN(2) == 0 {
			if _, err := d.ReadAt(p, off); err != nil {
				t.Fatalf("read [%d,+%d): %v", off, n, err)
			}
			if !bytes.Equal(p, model[off:off+n]) {
				t.Fatalf("read [%d,+%d) differs", off, n)
			}
			continue
		}
		copy(p, randBytes(r, int(n)))
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatalf("write [%d,+%d): %v", off, n, err)
		}
		copy(model[off:], p)
		if d.fileSize() != size {
			t.Fatalf("size %d after write [%d,+%d)", d.fileSize(), off, n)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("file differs from the model")
	}
	// growing the file with an unaligned write past its end
	tail := randBytes(r, 100)
	if _, err := d.WriteAt(tail, size+50); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != size+150 || d.fileSize() != size+150 {
		t.Fatalf("size %d / %d after growing, want %d", st.Size(), d.Size(), size+150)
	}
	got, _ = os.ReadFile(path)
	if !bytes.Equal(got[size:size+50], make([]byte, 50)) || !bytes.Equal(got[size+50:], tail) {
		t.Fatal("grown tail differs")
	}
	// the sector tail past the end of the file reads as zeroes
	if d.Size() != (size+150+511)&^511 {
		t.Fatalf("size %d, want %d rounded up to sectors", d.Size(), size+150)
	}
	buf := []byte("0123456789")
	if _, err := d.ReadAt(buf, size+145); err != nil || !bytes.Equal(buf, append(tail[95:], 0, 0, 0, 0, 0)) {
		t.Fatalf("read over the end of the file: %v %q", err, buf)
	}
	// a read past the rounded size fails rather than returning short
	if _, err := d.ReadAt(make([]byte, 10), d.Size()-5); err == nil {
		t.Fatal("read past the end succeeded")
	}
	// zeroes in buffers (the fallback) go through the bounce too
	if err := writeZeroBuffers(d, 4095, 10000); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(path)
	if !bytes.Equal(got[4095:14095], make([]byte, 10000)) || !bytes.Equal(got[:4095], model[:4095]) || !bytes.Equal(got[14095:size], model[14095:]) {
		t.Fatal("zero buffers went wrong")
	}
}

func TestAlignedBuf(t *testing.T) {
	for _, n := range []int64{0, 1, 4095, 4096, 1 << 20} {
		b := alignedBuf(n, 4096)
		if int64(len(b)) != n || int64(cap(b)) != n || n > 0 && uintptrOf(b)%4096 != 0 {
			t.Errorf("alignedBuf(%d): len %d cap %d addr %#x", n, len(b), cap(b), uintptrOf(b))
		}
	}
}

// TestReopen switches a locked read-only file to read/write and back: the
// locks stay (now on the new descriptor), the mode follows.
func TestReopen(t *testing.T) {
	path := writeFile(t, make([]byte, 8192))
	d := openT(t, path, false, "writeback")
	claim := image.Claim{Perm: image.PermConsistentRead, Shared: image.PermConsistentRead | image.PermWriteUnchanged}
	if err := d.SetPerm(claim.Perm, claim.Shared); err != nil {
		t.Fatal(err)
	}
	before := qemutest.LockedBytes(t, path)
	other := openT(t, path, true, "writeback")
	oldFd := d.fd

	if err := d.Reopen(true); err != nil {
		t.Fatal(err)
	}
	if fdFlags(t, d.fd)&syscall.O_ACCMODE != syscall.O_RDWR {
		t.Fatal("reopened descriptor is not read/write")
	}
	if d.fd == oldFd {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/fd/%d", oldFd)); err != nil {
			t.Fatal("descriptor number reused but gone")
		}
	}
	if got := qemutest.LockedBytes(t, path); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("locks %v after reopen, want %v", got, before)
	}
	// the locks still keep out a writer, and now belong to the new fd
	if err := other.SetPerm(image.PermWrite, image.PermAll); err == nil {
		t.Fatal("writer got past the reopened file's locks")
	}
	if _, err := d.WriteAt([]byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.SetPerm(image.PermConsistentRead|image.PermWrite, image.PermConsistentRead|image.PermWriteUnchanged); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(qemutest.LockedBytes(t, path)); got != "[100 101 201 203]" {
		t.Fatalf("locks %s after taking write", got)
	}
	if err := d.Reopen(false); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte("x"), 0); err == nil {
		t.Fatal("write through the read-only descriptor succeeded")
	}
	if got := fmt.Sprint(qemutest.LockedBytes(t, path)); got != "[100 101 201 203]" {
		t.Fatalf("locks %s after reopening read-only", got)
	}
	if err := d.Reopen(false); err != nil {
		t.Fatal(err)
	}
	// a path replaced by another file is refused
	if err := os.Rename(writeFile(t, nil), path); err != nil {
		t.Fatal(err)
	}
	if err := d.Reopen(true); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("reopen of a replaced file: %v", err)
	}
	if fdFlags(t, d.fd)&syscall.O_ACCMODE != syscall.O_RDONLY {
		t.Fatal("failed reopen changed the mode")
	}
	d.Close()
	if got := qemutest.LockedBytes(t, path); len(got) != 0 {
		t.Fatalf("locks %v after close", got)
	}
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestWriteZeroesAndDiscard(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const size = 1 << 20
	data := randBytes(r, size)
	for _, cache := range []string{"writeback", "none"} {
		t.Run(cache, func(t *testing.T) {
			path := writeFile(t, data)
			d := openT(t, path, true, cache)
			full := allocated(t, path)
			// without unmap: zeroes, still allocated
			if err := d.WriteZeroes(65536, 65536, false); err != nil {
				t.Fatal(err)
			}
			// with unmap: a hole
			if err := d.WriteZeroes(262144, 131072, true); err != nil {
				t.Fatal(err)
			}
			// an unaligned range
			if err := d.WriteZeroes(1000, 3000, true); err != nil {
				t.Fatal(err)
			}
			if err := d.Discard(524288, 65536); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			want := append([]byte(nil), data...)
			for _, z := range [][2]int{{65536, 65536}, {262144, 131072}, {1000, 3000}, {524288, 65536}} {
				clear(want[z[0] : z[0]+z[1]])
			}
			if !bytes.Equal(got, want) {
				t.Fatal("content differs")
			}
			checkPunched(t, d, path, full)
			// zeroes past the end grow the file
			if err := d.WriteZeroes(size, 4096, false); err != nil {
				t.Fatal(err)
			}
			if st, _ := os.Stat(path); st.Size() != size+4096 || d.Size() != size+4096 {
				t.Fatalf("size %d after zeroes past the end", st.Size())
			}
		})
	}
}

// checkPunched checks that the unmapped range [262144, +131072) and the
// discarded range [524288, +65536) are holes, or, where holes cannot be
// punched, written zeroes and data.
func checkPunched(t *testing.T, d *File, path string, full int64) {
	t.Helper()
	a := allocated(t, path)
	e, err := d.BlockStatus(262144, 131072)
	if err != nil {
		t.Fatal(err)
	}
	if !punchesHoles {
		if a < full || !e.Data || e.Zero {
			t.Errorf("without hole punching: allocated %d of %d, status %+v", a, full, e)
		}
		return
	}
	if a > full-131072-65536 {
		t.Errorf("allocated %d of %d: unmap and discard freed nothing", a, full)
	}
	if findsHoles && (e.Data || !e.Zero || e.Length != 131072) {
		t.Errorf("status of the punched range: %+v", e)
	}
}

// TestTruncate: growth with every preallocation mode, shrinking, and the
// modes files do not have.
func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		mode      image.Prealloc
		wantAlloc func(a int64) bool
	}{
		{image.PreallocOff, func(a int64) bool { return a == 4096 }}, // the first block only
		{image.PreallocFalloc, func(a int64) bool { return a >= 1<<20 }},
		{image.PreallocFull, func(a int64) bool { return a >= 1<<20 }},
	} {
		path := writeFile(t, nil)
		d := openT(t, path, true, "writeback")
		if err := d.Truncate(1<<20, tc.mode); err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(path); st.Size() != 1<<20 || d.Size() != 1<<20 {
			t.Fatalf("%s: size %d", tc.mode, st.Size())
		}
		if a := allocated(t, path); !tc.wantAlloc(a) {
			t.Errorf("%s: %d bytes allocated", tc.mode, a)
		}
		// growing a non-empty file leaves its head alone
		if err := d.Truncate(2<<20, tc.mode); err != nil {
			t.Fatal(err)
		}
		if err := d.Truncate(1000, tc.mode); err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(path); st.Size() != 1000 || d.fileSize() != 1000 || d.Size() != 1024 {
			t.Fatalf("%s: size %d after shrinking", tc.mode, st.Size())
		}
	}
	d := openT(t, writeFile(t, nil), true, "writeback")
	if err := d.Truncate(4096, image.PreallocMetadata); err == nil || err.Error() != "Unsupported preallocation mode: metadata" {
		t.Errorf("metadata: %v", err)
	}
	if err := d.Truncate(4096, "bogus"); err == nil || err.Error() != "invalid parameter value: bogus" {
		t.Errorf("bogus: %v", err)
	}
	if d.Size() != 0 {
		t.Error("a refused truncate changed the size")
	}
	// under O_DIRECT the first block and full preallocation are written
	// through aligned buffers
	path := writeFile(t, nil)
	dd := openT(t, path, true, "none")
	if err := dd.Truncate(10000, image.PreallocOff); err != nil {
		t.Fatal(err)
	}
	if err := dd.Truncate(30000, image.PreallocFull); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != 30000 {
		t.Fatalf("size %d", st.Size())
	}
}

func TestCheckPrealloc(t *testing.T) {
	for v, want := range map[string]string{
		"off": "", "falloc": "", "full": "",
		"metadata": "Unsupported preallocation mode: metadata",
		"bogus":    "invalid parameter value: bogus",
		"":         "invalid parameter value: ",
	} {
		err := CheckPrealloc(v)
		if got := fmt.Sprint(err); want == "" && err != nil || want != "" && got != want {
			t.Errorf("CheckPrealloc(%q) = %v, want %q", v, err, want)
		}
	}
}

// TestCreate: an existing file is opened without truncation (the caller
// locks it before changing it); failures use qemu-img's words.
func TestCreate(t *testing.T) {
	path := writeFile(t, []byte("keep me"))
	drv, err := Create(path, image.ProtocolOptions{Cache: image.CacheWriteback})
	if err != nil {
		t.Fatal(err)
	}
	d := drv.(*File)
	if !d.writable || d.fileSize() != 7 {
		t.Fatalf("writable %v size %d", d.writable, d.fileSize())
	}
	d.Close()
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Fatalf("create changed the file: %q", b)
	}
	dir := t.TempDir()
	for name, want := range map[string]string{
		filepath.Join(dir, "nodir", "x.raw"): "No such file or directory",
		dir:                                  "Is a directory",
	} {
		_, err := Create(name, image.ProtocolOptions{Cache: image.CacheWriteback})
		if w := fmt.Sprintf("Could not create '%s': %s", name, want); err == nil || err.Error() != w {
			t.Errorf("create %s: got %v, want %q", name, err, w)
		}
	}
	fresh := filepath.Join(dir, "fresh")
	drv, err = Create(fresh, image.ProtocolOptions{Cache: image.CacheWriteback})
	if err != nil {
		t.Fatal(err)
	}
	drv.Close()
	if st, err := os.Stat(fresh); err != nil || st.Size() != 0 || st.Mode().Perm() != 0o644&^umask() {
		t.Fatalf("new file: %v %v", st, err)
	}
}

func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

// TestDirectConcurrentWrites: writers of neighbouring, non-overlapping
// ranges that share aligned blocks do not undo each other's bytes.
func TestDirectConcurrentWrites(t *testing.T) {
	const size = 1 << 20
	path := writeFile(t, make([]byte, size))
	d := openT(t, path, true, "none")
	// ranges of 100..5000 bytes back to back, some aligned
	r := rand.New(rand.NewPCG(13, 14))
	type w struct {
		off  int64
		data []byte
	}
	var ws []w
	for off := int64(0); off < size; {
		n := int64(100 + r.IntN(4900))
		if r.IntN(4) == 0 && off%4096 == 0 {
			n = 4096
		}
		n = min(n, size-off)
		ws = append(ws, w{off, alignedCopy(randBytes(r, int(n)))})
		off += n
	}
	done := make(chan error)
	const workers = 8
	for k := 0; k < workers; k++ {
		go func(k int) {
			for i := k; i < len(ws); i += workers {
				if _, err := d.WriteAt(ws[i].data, ws[i].off); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}(k)
	}
	for k := 0; k < workers; k++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(path)
	for _, w := range ws {
		if !bytes.Equal(got[w.off:w.off+int64(len(w.data))], w.data) {
			t.Fatalf("range [%d,+%d) lost its bytes", w.off, len(w.data))
		}
	}
}

// alignedCopy copies b into page-aligned memory, so that aligned ranges
// take the direct path.
func alignedCopy(b []byte) []byte {
	c := alignedBuf(int64(len(b)), 4096)
	copy(c, b)
	return c
}
