package image

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// open opens a mem: image with the test formats.
func openMem(t *testing.T, name, format string, writable bool, c Claim, user string) (*Node, error) {
	t.Helper()
	return Open(memPrefix+name, OpenOptions{Format: format, Writable: writable, Claim: c, User: user})
}

func mustOpen(t *testing.T, name, format string, writable bool, c Claim, user string) *Node {
	t.Helper()
	n, err := openMem(t, name, format, writable, c, user)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func mustClose(t *testing.T, n *Node) {
	t.Helper()
	if err := n.Close(); err != nil {
		t.Fatalf("close %s: %v", n.Filename, err)
	}
}

// checkLocks compares what the mem file's lock state is.
func checkLocks(t *testing.T, name string, perm, shared Perm) {
	t.Helper()
	d := memGet(name)
	if d.perm != perm || d.shared != shared {
		t.Fatalf("%s locks: holds [%v] shares [%v], want holds [%v] shares [%v]", name, d.perm, d.shared, perm, shared)
	}
}

var (
	claimReadNoWrite = Claim{Perm: PermConsistentRead, Shared: PermAll &^ (PermWrite | PermResize)}
	claimWriteShare  = Claim{Perm: PermConsistentRead | PermWrite, Shared: PermAll}
)

// TestWriteTwiceRefused: one image opened for writing twice in one
// process is refused when the claims say so, before the second open reads
// a byte, and the first user is left as it was.
func TestWriteTwiceRefused(t *testing.T) {
	for _, format := range []string{"testfmt", "testraw"} {
		t.Run(format, func(t *testing.T) {
			name := "twice-" + format
			d := memPut(name, testImage("", 4096))
			first := mustOpen(t, name, format, true, ClaimWrite, "first writer")
			reads := d.reads
			perm, shared := d.perm, d.shared
			_, err := openMem(t, name, format, true, ClaimWrite, "second writer")
			if !errors.Is(err, ErrPermission) {
				t.Fatalf("second write open: got %v, want a permission conflict", err)
			}
			// one file opened twice: qemu's words of a lock conflict
			for _, w := range []string{memPrefix + name, `"write" lock`} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
			if d.reads != reads {
				t.Errorf("the refused open read the file %d times", d.reads-reads)
			}
			checkLocks(t, name, perm, shared)
			if d.opens != 1 {
				t.Errorf("%d descriptors open, want the first user's only", d.opens)
			}
			// the first user still works
			buf := make([]byte, 512)
			if _, err := first.WriteAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			mustClose(t, first)
			// and once it is gone the second writer gets in
			second := mustOpen(t, name, format, true, ClaimWrite, "second writer")
			mustClose(t, second)
			if d.opens != 0 {
				t.Errorf("%d descriptors left open", d.opens)
			}
		})
	}
}

// TestSharingWriters: writers that share writing may both open an image
// without metadata (two qemu-io -f raw do), not one with metadata.
func TestSharingWriters(t *testing.T) {
	memPut("share-raw", testImage("", 4096))
	a := mustOpen(t, "share-raw", "testraw", true, claimWriteShare, "a")
	b := mustOpen(t, "share-raw", "testraw", true, claimWriteShare, "b")
	if a.File() != b.File() {
		t.Fatal("one file opened twice is two protocol nodes")
	}
	checkLocks(t, "share-raw", PermConsistentRead|PermWrite, PermLockable)
	mustClose(t, a)
	checkLocks(t, "share-raw", PermConsistentRead|PermWrite, PermLockable)
	mustClose(t, b)

	memPut("share-fmt", testImage("", 4096))
	mustOpen(t, "share-fmt", "testfmt", true, claimWriteShare, "a")
	if _, err := openMem(t, "share-fmt", "testfmt", true, claimWriteShare, "b"); !errors.Is(err, ErrPermission) {
		t.Fatalf("second writer of a format with metadata: %v", err)
	}
	// even a reader is refused: its format node refuses writers of the file
	if _, err := openMem(t, "share-fmt", "testfmt", false, ClaimRead, "reader"); !errors.Is(err, ErrPermission) {
		t.Fatalf("reader of a format with metadata being written: %v", err)
	}
}

// TestReadWriteMatrix: users whose shares refuse each other, both orders.
func TestReadWriteMatrix(t *testing.T) {
	for i, tc := range []struct {
		first, second       Claim
		firstW, secondW     bool
		ok                  bool
		wantInError         string
		secondRefusedByName string
	}{
		// a reader that refuses writers keeps a writer out
		{claimReadNoWrite, ClaimWrite, false, true, false, `"write" lock`, "first"},
		// a reader that shares everything lets a writer in
		{ClaimRead, claimWriteShare, false, true, true, "", ""},
		// a writer keeps out a reader that refuses writers
		{ClaimWrite, claimReadNoWrite, true, false, false, `shared "write" lock`, "second"},
		// a writer lets in a reader that shares
		{ClaimWrite, ClaimRead, true, false, true, "", ""},
		// a writer refusing resize keeps out a resizer
		{claimWriteShare.with(0, PermResize), Claim{Perm: PermResize, Shared: PermAll}, true, true, false, `"resize" lock`, "first"},
		// -U: shares everything, reads only
		{ClaimWrite, ClaimForceShare, true, false, true, "", ""},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			name := fmt.Sprintf("matrix%d", i)
			memPut(name, testImage("", 4096))
			mustOpen(t, name, "testraw", tc.firstW, tc.first, "first")
			n, err := openMem(t, name, "testraw", tc.secondW, tc.second, "second")
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				mustClose(t, n)
				return
			}
			if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), tc.wantInError) {
				t.Fatalf("got %v, want a permission conflict naming %s", err, tc.wantInError)
			}
		})
	}
}

// with returns c with perm added to Perm and unshared removed from Shared.
func (c Claim) with(perm, unshared Perm) Claim {
	return Claim{Perm: c.Perm | perm, Shared: c.Shared &^ unshared}
}

// TestReleaseLoosens: when a user goes, the claims and locks of the file
// fall back to what the remaining users need.
func TestReleaseLoosens(t *testing.T) {
	memPut("loosen", testImage("", 4096))
	strict := mustOpen(t, "loosen", "testraw", false, claimReadNoWrite, "strict reader")
	lax := mustOpen(t, "loosen", "testraw", false, ClaimRead, "lax reader")
	checkLocks(t, "loosen", PermConsistentRead, PermLockable&^(PermWrite|PermResize))
	if _, err := openMem(t, "loosen", "testraw", true, claimWriteShare, "writer"); err == nil {
		t.Fatal("writer got in past a reader refusing writes")
	}
	mustClose(t, strict)
	checkLocks(t, "loosen", PermConsistentRead, PermLockable)
	w := mustOpen(t, "loosen", "testraw", true, claimWriteShare, "writer")
	checkLocks(t, "loosen", PermConsistentRead|PermWrite, PermLockable)
	mustClose(t, w)
	checkLocks(t, "loosen", PermConsistentRead, PermLockable)
	mustClose(t, lax)
	if d := memGet("loosen"); d.opens != 0 {
		t.Fatalf("%d descriptors left open", d.opens)
	}
}

// TestEdgeUpdate changes a user's claim up and down.
func TestEdgeUpdate(t *testing.T) {
	memPut("update", testImage("", 4096))
	n := mustOpen(t, "update", "testraw", false, ClaimRead, "base")
	job, err := n.Claim("job", ClaimRead)
	if err != nil {
		t.Fatal(err)
	}
	other, err := n.Claim("other reader", ClaimRead)
	if err != nil {
		t.Fatal(err)
	}
	checkLocks(t, "update", PermConsistentRead, PermLockable)
	// up: the job writes and refuses other writers
	if err := job.Update(Claim{Perm: PermConsistentRead | PermWrite, Shared: PermConsistentRead | PermWriteUnchanged}); err != nil {
		t.Fatal(err)
	}
	checkLocks(t, "update", PermConsistentRead|PermWrite, PermConsistentRead|PermWriteUnchanged)
	_, err = n.Claim("writer", claimWriteShare)
	if want := "mem:update: Conflicts with use by job, which does not allow 'write' on mem:update"; err == nil || err.Error() != want || !errors.Is(err, ErrPermission) {
		t.Fatalf("writer against the job: got %v, want %q", err, want)
	}
	// an update that conflicts with another user is refused, all or nothing
	if err := other.Update(Claim{Perm: PermConsistentRead, Shared: PermConsistentRead}); !errors.Is(err, ErrPermission) {
		t.Fatalf("refusing writes to a writer: %v", err)
	}
	if other.Claim != ClaimRead {
		t.Fatalf("refused update changed the claim to %+v", other.Claim)
	}
	checkLocks(t, "update", PermConsistentRead|PermWrite, PermConsistentRead|PermWriteUnchanged)
	// down again: writers are welcome
	if err := job.Update(ClaimRead); err != nil {
		t.Fatal(err)
	}
	checkLocks(t, "update", PermConsistentRead, PermLockable)
	w, err := n.Claim("writer", claimWriteShare)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*Edge{w, other, job} {
		if err := e.Release(); err != nil {
			t.Fatal(err)
		}
	}
	checkLocks(t, "update", PermConsistentRead, PermLockable)
}

// TestLockRefusedRollsBack: another process refusing a permission (the
// protocol's SetPerm fails) leaves this process's claims as they were.
func TestLockRefusedRollsBack(t *testing.T) {
	d := memPut("locked", testImage("", 4096))
	r := mustOpen(t, "locked", "testraw", false, ClaimRead, "reader")
	d.refuse = PermWrite
	_, err := openMem(t, "locked", "testraw", true, claimWriteShare, "writer")
	var le *LockError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want a LockError", err)
	}
	want := `Failed to get "write" lock. Is another process using the image [mem:locked]?`
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	checkLocks(t, "locked", PermConsistentRead, PermLockable)
	if n := len(r.File().parents); n != 1 {
		t.Fatalf("file has %d users after the refused open, want 1", n)
	}
	if d.reopens != 0 {
		t.Fatal("the refused writer reopened the file read/write")
	}
	// the same through Edge.Update
	e, err := r.Claim("job", ClaimRead)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Update(claimWriteShare); !errors.As(err, &le) {
		t.Fatalf("update: got %v, want a LockError", err)
	}
	if e.Claim != ClaimRead {
		t.Fatal("refused update kept its new claim")
	}
	checkLocks(t, "locked", PermConsistentRead, PermLockable)
	d.refuse = 0
	if err := e.Update(claimWriteShare); err != nil {
		t.Fatal(err)
	}
	checkLocks(t, "locked", PermConsistentRead|PermWrite, PermLockable)
}

// TestReopenWritable: a file open read-only is reopened read/write for a
// writer that joins it, only after the writer's claims are granted.
func TestReopenWritable(t *testing.T) {
	d := memPut("reopen", testImage("", 4096))
	r := mustOpen(t, "reopen", "testraw", false, ClaimRead, "reader")
	if r.File().Writable() {
		t.Fatal("read-only open made a writable file node")
	}
	w := mustOpen(t, "reopen", "testraw", true, claimWriteShare, "writer")
	if !w.File().Writable() || d.reopens != 1 {
		t.Fatalf("writer: file writable %v after %d reopens", w.File().Writable(), d.reopens)
	}
	if _, err := r.WriteAt(make([]byte, 1), 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write through the read-only user: %v", err)
	}
	if _, err := w.WriteAt([]byte{7}, 0); err != nil {
		t.Fatal(err)
	}
}

// TestBackingLoop: an image that is its own backing file, and a longer
// loop, are refused with qemu-img's message and leave nothing open.
func TestBackingLoop(t *testing.T) {
	memPut("self", testImage("mem:self", 512))
	memPut("la", testImage("mem:lb", 512))
	memPut("lb", testImage("mem:lc", 512))
	memPut("lc", testImage("mem:la", 512))
	for _, tc := range []struct{ top, loop string }{{"self", "mem:self"}, {"la", "mem:la"}, {"lb", "mem:lb"}} {
		for _, format := range []string{"testfmt", ""} {
			_, err := Open(memPrefix+tc.top, OpenOptions{Format: format, Claim: ClaimRead})
			want := fmt.Sprintf("Backing file '%s' creates an infinite loop.", tc.loop)
			if err == nil || err.Error() != want || !errors.Is(err, ErrCorrupt) {
				t.Errorf("open %s -f %q: got %v, want %q", tc.top, format, err, want)
			}
		}
	}
	for _, name := range []string{"self", "la", "lb", "lc"} {
		if d := memGet(name); d.opens != 0 {
			t.Errorf("%s: %d descriptors left open", name, d.opens)
		}
	}
	// without backing files the image opens
	n, err := Open("mem:self", OpenOptions{Claim: ClaimRead, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, n)
}

// TestChainDepth: a chain of MaxChainDepth images opens; one more is
// refused with one short error, and nothing stays open.
func TestChainDepth(t *testing.T) {
	const n = MaxChainDepth + 1
	for i := 0; i < n; i++ {
		backing := ""
		if i+1 < n {
			backing = fmt.Sprintf("mem:depth%d", i+1)
		}
		memPut(fmt.Sprintf("depth%d", i), testImage(backing, 512))
	}
	top, err := Open("mem:depth1", OpenOptions{Format: "testfmt", Claim: ClaimRead})
	if err != nil {
		t.Fatalf("chain of %d: %v", MaxChainDepth, err)
	}
	if got := len(top.Chain()); got != MaxChainDepth {
		t.Fatalf("chain of %d nodes, want %d", got, MaxChainDepth)
	}
	// block status resolves through the chain
	e, err := top.BlockStatusChain(300, 100)
	if err != nil {
		t.Fatal(err)
	}
	if e.Depth != MaxChainDepth-1 || !e.Zero { // the bottom layer, as qemu-img map names it
		t.Fatalf("block status past every layer's data: %+v", e)
	}
	mustClose(t, top)

	_, err = Open("mem:depth0", OpenOptions{Format: "testfmt", Claim: ClaimRead})
	want := fmt.Sprintf("mem:depth%d: backing chain is deeper than %d images", MaxChainDepth, MaxChainDepth)
	if err == nil || err.Error() != want {
		t.Fatalf("chain of %d: got %v, want %q", n, err, want)
	}
	for i := 0; i < n; i++ {
		if d := memGet(fmt.Sprintf("depth%d", i)); d.opens != 0 {
			t.Fatalf("depth%d: %d descriptors left open", i, d.opens)
		}
	}
}

// TestMissingBacking: the error says which layer failed, once per layer
// as qemu-img does.
func TestMissingBacking(t *testing.T) {
	memPut("mb-top", testImage("mem:mb-mid", 512))
	memPut("mb-mid", testImage("mem:mb-gone", 512))
	_, err := Open("mem:mb-top", OpenOptions{Format: "testfmt", Claim: ClaimRead})
	want := "Could not open backing file: Could not open backing file: Could not open 'mem:mb-gone': No such file or directory"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	for _, name := range []string{"mb-top", "mb-mid"} {
		if d := memGet(name); d.opens != 0 {
			t.Errorf("%s: %d descriptors left open", name, d.opens)
		}
	}
}

// TestBackingClaims: backing files are read, and let others write them
// only when the overlay's users let others write the overlay.
func TestBackingClaims(t *testing.T) {
	memPut("bc-top", testImage("mem:bc-base", 512))
	memPut("bc-base", testImage("", 512))
	top := mustOpen(t, "bc-top", "testfmt", true, ClaimWrite, "writer")
	b := top.Backing()
	if b == nil || b.Writable() || b.File().Writable() {
		t.Fatal("backing node missing or writable")
	}
	checkLocks(t, "bc-base", PermConsistentRead, PermLockable&^(PermWrite|PermResize))
	if _, err := openMem(t, "bc-base", "testfmt", true, ClaimWrite, "base writer"); !errors.Is(err, ErrPermission) {
		t.Fatalf("writing a backing file in use: %v", err)
	}
	mustClose(t, top)
	if d := memGet("bc-base"); d.opens != 0 {
		t.Fatalf("backing file left open")
	}
}

func TestForceShareOnlyReadOnly(t *testing.T) {
	memPut("fs", testImage("", 512))
	_, err := Open("mem:fs", OpenOptions{Format: "testfmt", Writable: true, ForceShare: true})
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "force-share=on can only be used with read-only images") {
		t.Fatalf("got %v", err)
	}
	// -U readers get in beside a writer of a format with metadata
	mustOpen(t, "fs", "testfmt", true, ClaimWrite, "writer")
	n, err := Open("mem:fs", OpenOptions{Format: "testfmt", ForceShare: true})
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, n)
}

func TestResolveBacking(t *testing.T) {
	for _, tc := range []struct{ overlay, name, want string }{
		// the cases checked against qemu-img info's full-backing-filename
		{"d/top.qcow2", "base.qcow2", "d/base.qcow2"},
		{"./d/top.qcow2", "base.qcow2", "./d/base.qcow2"},
		{"d//top.qcow2", "base.qcow2", "d//base.qcow2"},
		{"d/./top.qcow2", "base.qcow2", "d/./base.qcow2"},
		{"d/e/../top.qcow2", "base.qcow2", "d/e/../base.qcow2"},
		{"file:d/top.qcow2", "base.qcow2", "d/base.qcow2"},
		{"d/e/t2.qcow2", "../base.qcow2", "d/e/../base.qcow2"},
		{"/tmp/me/d/e/t2.qcow2", "../base.qcow2", "/tmp/me/d/e/../base.qcow2"},
		{"top.qcow2", "base.qcow2", "base.qcow2"},
		{"/top.qcow2", "base.qcow2", "/base.qcow2"},
		// absolute and protocol names stay as they are
		{"d/top.qcow2", "/abs/base", "/abs/base"},
		{"d/top.qcow2", "nbd://host/export", "nbd://host/export"},
		{"d/top.qcow2", "nbd+unix:///e?socket=/s", "nbd+unix:///e?socket=/s"},
		{"d/top.qcow2", "file:base", "file:base"},
		{"d/top.qcow2", "", ""},
		{"nbd://host/export", "base", "base"},
		// an object's backing file is in its bucket
		{"s3://b/d/top.qcow2", "base.qcow2", "s3://b/d/base.qcow2"},
		{"s3://b/top.qcow2", "../base.qcow2", "s3://b/../base.qcow2"},
		{"s3://b/top.qcow2", "/abs/base", "/abs/base"},
	} {
		if got := ResolveBacking(tc.overlay, tc.name); got != tc.want {
			t.Errorf("ResolveBacking(%q, %q) = %q, want %q", tc.overlay, tc.name, got, tc.want)
		}
	}
}

func TestBlockStatusChain(t *testing.T) {
	memPut("bs-top", testImage("mem:bs-base", 1024))
	memPut("bs-base", testImage("", 2048))
	top := mustOpen(t, "bs-top", "testfmt", false, ClaimRead, "map")
	for _, tc := range []struct {
		off, length int64
		want        Extent
	}{
		{0, 1024, Extent{Offset: 0, Length: 512, Allocated: true, Data: true, HostOffset: 512, Depth: 0}},
		// unallocated in the top: the base's first half decides
		{512, 512, Extent{Offset: 512, Length: 512, Allocated: true, Data: true, HostOffset: 1024, Depth: 1}},
	} {
		e, err := top.BlockStatusChain(tc.off, tc.length)
		if err != nil {
			t.Fatal(err)
		}
		e.Host = nil
		if e != tc.want {
			t.Errorf("BlockStatusChain(%d, %d) = %+v, want %+v", tc.off, tc.length, e, tc.want)
		}
	}
	if _, err := top.BlockStatus(1000, 100); err == nil {
		t.Error("block status beyond the end succeeded")
	}
}

// TestInfoClaim: a user that needs nothing (info) makes a format with
// metadata refuse writers and resizers of its file without reading it, as
// QEMU's BDRV_O_NO_IO; down a backing chain likewise.
func TestInfoClaim(t *testing.T) {
	memPut("info-top", testImage("mem:info-base", 512))
	memPut("info-base", testImage("", 512))
	for _, forceShare := range []bool{false, true} {
		n, err := Open("mem:info-top", OpenOptions{Format: "testfmt", Claim: ClaimInfo, ForceShare: forceShare})
		if err != nil {
			t.Fatal(err)
		}
		want := PermLockable &^ (PermWrite | PermResize)
		if forceShare {
			want = PermLockable
		}
		checkLocks(t, "info-top", 0, want)
		checkLocks(t, "info-base", 0, want)
		mustClose(t, n)
	}
	// reading users read their backing files consistently
	n := mustOpen(t, "info-top", "testfmt", false, ClaimRead, "reader")
	checkLocks(t, "info-base", PermConsistentRead, PermLockable&^(PermWrite|PermResize))
	mustClose(t, n)
	// -U keeps a reader's need for consistent read
	n, err := Open("mem:info-top", OpenOptions{Format: "testfmt", Claim: ClaimRead, ForceShare: true})
	if err != nil {
		t.Fatal(err)
	}
	checkLocks(t, "info-top", PermConsistentRead, PermLockable)
	mustClose(t, n)
}

// TestNodeReopen: a backing node reopened read/write for a commit, then
// read-only again; the claims on it and on its file follow.
func TestNodeReopen(t *testing.T) {
	memPut("ro-top", testImage("mem:ro-base", 512))
	base := memPut("ro-base", testImage("", 512))
	top := mustOpen(t, "ro-top", "testfmt", false, ClaimRead, "commit")
	b := top.Backing()
	roLocks := func() { checkLocks(t, "ro-base", PermConsistentRead, PermLockable&^(PermWrite|PermResize)) }
	roLocks()
	// another reader of the base that refuses writers keeps it read-only
	other, err := Open("mem:ro-base", OpenOptions{Format: "testfmt", Claim: claimReadNoWrite, User: "strict"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Reopen(true); !errors.Is(err, ErrPermission) {
		t.Fatalf("reopen against a reader refusing writes: %v", err)
	}
	if b.Writable() || b.File().Writable() || base.reopens != 0 {
		t.Fatal("refused reopen changed the node")
	}
	roLocks()
	mustClose(t, other)

	if err := b.Reopen(true); err != nil {
		t.Fatal(err)
	}
	if !b.Writable() || !b.File().Writable() || !b.drv.(*testFmt).writable {
		t.Fatal("reopened node, file or driver not writable")
	}
	checkLocks(t, "ro-base", PermConsistentRead|PermWrite|PermResize, PermLockable&^(PermWrite|PermResize))
	if _, err := b.WriteAt([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	// the overlay's edge now claims write on its backing file
	if e := b.parents[0]; e.Claim.Perm&PermWrite == 0 {
		t.Fatalf("backing edge claim %+v", e.Claim)
	}
	// a second opener of the base for reading is refused while it is written
	if _, err := Open("mem:ro-base", OpenOptions{Format: "testfmt", Claim: ClaimRead}); !errors.Is(err, ErrPermission) {
		t.Fatalf("reader of a base being committed into: %v", err)
	}
	if err := b.Reopen(false); err != nil {
		t.Fatal(err)
	}
	if b.Writable() || b.File().Writable() || b.drv.(*testFmt).writable {
		t.Fatal("node, file or driver still writable")
	}
	roLocks()
	if _, err := b.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write after reopening read-only: %v", err)
	}
	if base.reopens != 2 {
		t.Fatalf("%d file reopens, want 2", base.reopens)
	}
	mustClose(t, top)
	if base.opens != 0 {
		t.Fatal("base left open")
	}
}

// TestNodeReopenRollsBack: the data file refuses the write lock after
// the file took it; the file's locks go back to what they were (the
// relocks of an undo run after every claim is restored).
func TestNodeReopenRollsBack(t *testing.T) {
	memPut("rb-top", testImage("mem:rb-base", 512))
	memPut("rb-base", testImageDF("", "mem:rb-data", 512))
	data := memPut("rb-data", make([]byte, 4096))
	top := mustOpen(t, "rb-top", "testfmt", false, ClaimRead, "commit")
	b := top.Backing()
	if b.Child(RoleDataFile) == nil {
		t.Fatal("no data file")
	}
	fileLocks := func() {
		checkLocks(t, "rb-base", PermConsistentRead, PermLockable&^(PermWrite|PermResize))
		// the data file lets others write it while the overlay's users do
		// (as for backing files), never resize it
		checkLocks(t, "rb-data", PermConsistentRead, PermLockable&^PermResize)
	}
	fileLocks()
	data.refuse = PermWrite
	err := b.Reopen(true)
	var le *LockError
	if !errors.As(err, &le) {
		t.Fatalf("got %v, want a lock error from the data file", err)
	}
	fileLocks()
	if b.Writable() || b.File().Writable() || b.parents[0].Claim.Perm&PermWrite != 0 {
		t.Fatal("refused reopen left something writable")
	}
	data.refuse = 0
	if err := b.Reopen(true); err != nil {
		t.Fatal(err)
	}
	checkLocks(t, "rb-data", PermConsistentRead|PermWrite|PermResize, PermConsistentRead|PermWriteUnchanged)
}
