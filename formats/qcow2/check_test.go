package qcow2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"qimg/image"
)

// Differential tests of check and repair: images made by qemu-img and
// qemu-io, damaged on purpose, checked by qemu-img and by qimg; counts,
// messages, exit statuses, repaired files and guest data must agree.

// chkNeedQemu skips without qemu-img and qemu-io, unless
// QIMG_REQUIRE_QEMU=1 makes their absence a failure.
func chkNeedQemu(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("QIMG_REQUIRE_QEMU") == "1" {
				t.Fatalf("%s not found and QIMG_REQUIRE_QEMU=1", tool)
			}
			t.Skipf("%s not found", tool)
		}
	}
}

// chkRun runs a tool and returns its stdout, stderr and exit status.
func chkRun(t *testing.T, name string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	}
	return out.String(), errb.String(), 0
}

func chkMust(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, errs, rc := chkRun(t, name, args...); rc != 0 {
		t.Fatalf("%s %s: exit %d\n%s%s", name, strings.Join(args, " "), rc, out, errs)
	}
}

// chkImage is a parsed view of an image's bytes, for damaging it.
type chkImage struct {
	b           []byte
	clusterBits uint32
	cs          int
	l1, rt      int
}

func parseChkImage(t *testing.T, b []byte) *chkImage {
	t.Helper()
	m := &chkImage{b: b, clusterBits: binary.BigEndian.Uint32(b[offClusterBits:])}
	m.cs = 1 << m.clusterBits
	m.l1 = int(binary.BigEndian.Uint64(b[offL1TableOffset:]))
	m.rt = int(binary.BigEndian.Uint64(b[offRefcountTableOffset:]))
	if order := binary.BigEndian.Uint32(b[offRefcountOrder:]); order != 4 {
		t.Fatalf("test images have 16-bit refcounts, not order %d", order)
	}
	return m
}

func (m *chkImage) u64(off int) uint64      { return binary.BigEndian.Uint64(m.b[off:]) }
func (m *chkImage) put64(off int, v uint64) { binary.BigEndian.PutUint64(m.b[off:], v) }
func (m *chkImage) l2(i int) int            { return int(m.u64(m.l1+8*i) & l1OffsetMask) }

// setRefcount sets the stored refcount of cluster ci (its block exists).
func (m *chkImage) setRefcount(ci int, v uint16) {
	per := m.cs / 2
	blk := int(m.u64(m.rt+8*(ci/per)) & refcountTableOffsetMask)
	binary.BigEndian.PutUint16(m.b[blk+2*(ci%per):], v)
}

// grow appends n zero clusters to the file.
func (m *chkImage) grow(n int) { m.b = append(m.b, make([]byte, n*m.cs)...) }

// chkCase is an image built by qemu and a damage done to it.
type chkCase struct {
	name  string
	build func(t *testing.T, path string)
	harm  func(t *testing.T, m *chkImage)
	// bitmaps: qemu rewrites them when it closes an image it repaired,
	// so the repaired files differ (a bitmap whose table was lost is
	// stored again): the results of the repair must agree.
	bitmaps bool
	// dirty: qemu clears the dirty bit when it closes the image even if
	// the repair failed; qimg keeps it, so that the next writer repairs
	// the refcounts before it allocates.
	dirty bool
}

func buildPlain(t *testing.T, path string) {
	chkMust(t, "qemu-img", "create", "-q", "-f", "qcow2", path, "4M")
	chkMust(t, "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 2 2M 64k", "-c", "write -z 3M 64k", path)
}

func buildSnapshots(t *testing.T, path string) {
	chkMust(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", path, "4M")
	chkMust(t, "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 256k", "-c", "write -P 2 1M 16k", path)
	chkMust(t, "qemu-img", "snapshot", "-c", "s1", path)
	chkMust(t, "qemu-io", "-f", "qcow2", "-c", "write -P 3 0 8k", path)
	chkMust(t, "qemu-img", "snapshot", "-c", "s2", path)
	chkMust(t, "qemu-io", "-f", "qcow2", "-c", "write -P 4 4k 8k", path)
}

func buildCompressed(t *testing.T, path string) {
	raw := path + ".raw"
	chkMust(t, "qemu-img", "create", "-q", "-f", "raw", raw, "4M")
	chkMust(t, "qemu-io", "-f", "raw", "-c", "write -P 1 0 1M", "-c", "write -P 9 2M 100k", raw)
	chkMust(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "cluster_size=4k", raw, path)
	os.Remove(raw)
}

func buildBitmaps(t *testing.T, path string) {
	buildPlain(t, path)
	chkMust(t, "qemu-img", "bitmap", "--add", path, "b0")
	chkMust(t, "qemu-img", "bitmap", "--add", "-g", "128k", path, "b1")
	chkMust(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 0 512k", path)
}

func buildDirty(t *testing.T, path string) {
	chkMust(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", path, "4M")
	// abort leaves the image dirty, its new refcounts unwritten
	chkRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 3 0 300k", "-c", "abort", path)
}

// bitmapDirectory is the offset of the bitmap directory.
func (m *chkImage) bitmapDirectory(t *testing.T) int {
	off := int(binary.BigEndian.Uint32(m.b[offHeaderLength:]))
	for {
		typ := binary.BigEndian.Uint32(m.b[off:])
		n := int(binary.BigEndian.Uint32(m.b[off+4:]))
		if typ == extEnd {
			t.Fatal("no bitmaps extension")
		}
		if typ == extBitmaps {
			return int(m.u64(off + 8 + 16))
		}
		off += 8 + (n+7)&^7
	}
}

var chkCases = []chkCase{
	{name: "clean", build: buildPlain, harm: func(*testing.T, *chkImage) {}},
	{name: "leak", build: buildPlain, harm: func(t *testing.T, m *chkImage) {
		end := len(m.b) / m.cs
		m.grow(3)
		m.setRefcount(end, 1)
		m.setRefcount(end+2, 2)
	}},
	{name: "zero-refcount", build: buildPlain, harm: func(t *testing.T, m *chkImage) {
		data := int(m.u64(m.l2(0)) & l2OffsetMask)
		m.setRefcount(data/m.cs, 0)
	}},
	{name: "refcount-too-low", build: buildSnapshots, harm: func(t *testing.T, m *chkImage) {
		// a cluster shared by the snapshots and the active image
		data := int(m.u64(m.l2(0)+8*10) & l2OffsetMask)
		m.setRefcount(data/m.cs, 1)
	}},
	{name: "copied-flag", build: buildPlain, harm: func(t *testing.T, m *chkImage) {
		m.put64(m.l1, m.u64(m.l1)&^oflagCopied)
		l2 := m.l2(0)
		m.put64(l2+8, m.u64(l2+8)&^oflagCopied)
	}},
	{name: "l2-past-eof", build: buildPlain, harm: func(t *testing.T, m *chkImage) {
		l2 := m.l2(0)
		m.put64(l2+8, oflagCopied|uint64(100*m.cs))
		m.put64(l2+16, oflagCopied|uint64(len(m.b)))
	}},
	{name: "l2-misaligned", build: buildPlain, harm: func(t *testing.T, m *chkImage) {
		l2 := m.l2(0)
		m.put64(l2+24, m.u64(l2+24)+512)
	}},
	{name: "l2-overlaps-refcount-table", build: buildPlain, harm: func(t *testing.T, m *chkImage) {
		m.put64(m.l1, oflagCopied|uint64(m.rt))
	}},
	{name: "truncated", build: buildPlain, harm: func(t *testing.T, m *chkImage) {
		m.b = m.b[:1000000]
	}},
	{name: "snapshots-leak", build: buildSnapshots, harm: func(t *testing.T, m *chkImage) {
		end := len(m.b) / m.cs
		m.grow(2)
		m.setRefcount(end+1, 3)
	}},
	{name: "snapshot-extra-data-short", build: buildSnapshots, harm: func(t *testing.T, m *chkImage) {
		// entry 0 keeps 8 of the 16 bytes of extra data version 3 needs
		// (its name and id then start 8 bytes early)
		so := int(m.u64(offSnapshotsOffset))
		binary.BigEndian.PutUint32(m.b[so+36:], 8)
	}},
	{name: "snapshot-extra-data-too-much", build: buildSnapshots, harm: func(t *testing.T, m *chkImage) {
		so := int(m.u64(offSnapshotsOffset))
		binary.BigEndian.PutUint32(m.b[so+36:], 2000)
	}},
	{name: "compressed", build: buildCompressed, harm: func(t *testing.T, m *chkImage) {
		// two references too many to the first compressed cluster's host
		// cluster, and one leak
		e := m.u64(m.l2(0))
		x := 62 - (m.clusterBits - 8)
		host := int(e&(1<<x-1)) / m.cs
		m.setRefcount(host, 3)
		end := len(m.b) / m.cs
		m.grow(1)
		m.setRefcount(end, 1)
	}},
	{name: "compressed-copied", build: buildCompressed, harm: func(t *testing.T, m *chkImage) {
		l2 := m.l2(0)
		m.put64(l2+8, m.u64(l2+8)|oflagCopied)
	}},
	{name: "bitmap-directory-flags", build: buildBitmaps, bitmaps: true, harm: func(t *testing.T, m *chkImage) {
		d := m.bitmapDirectory(t)
		binary.BigEndian.PutUint32(m.b[d+12:], 0x10) // a reserved flag
	}},
	{name: "bitmap-directory-garbage", build: buildBitmaps, bitmaps: true, harm: func(t *testing.T, m *chkImage) {
		d := m.bitmapDirectory(t)
		copy(m.b[d:], bytes.Repeat([]byte{0xff}, 64))
	}},
	{name: "bitmap-table-past-eof", build: buildBitmaps, bitmaps: true, harm: func(t *testing.T, m *chkImage) {
		d := m.bitmapDirectory(t)
		m.put64(d, uint64(100*m.cs))
	}},
	{name: "bitmap-in-use", build: buildBitmaps, bitmaps: true, harm: func(t *testing.T, m *chkImage) {
		d := m.bitmapDirectory(t)
		binary.BigEndian.PutUint32(m.b[d+12:], bmeFlagInUse|bmeFlagAuto)
	}},
	{name: "dirty-lazy-refcounts", build: buildDirty, dirty: true, harm: func(*testing.T, *chkImage) {}},
}

// qemuExit is the exit status qemu-img check gives a result.
func qemuExit(r *image.CheckResult, err error) int {
	switch {
	case err != nil, r.CheckErrors > 0:
		return 1
	case r.Corruptions > 0:
		return 2
	case r.Leaks > 0:
		return 3
	}
	return 0
}

// logLines are the check's own messages of a stderr, without the tool's
// "qemu-img: …" lines (printed by the command) and messages of qemu's
// bitmap code when it closes a repaired image.
func logLines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l == "" || strings.HasPrefix(l, "qemu-img:") || strings.HasPrefix(l, "qimg:") || strings.HasPrefix(l, "qcow2_free_clusters failed") {
			continue
		}
		out = append(out, l)
	}
	return out
}

// qimgCheck runs qimg's check as qemu-img check [-r mode] would.
func qimgCheck(t *testing.T, path, mode string) (*image.CheckResult, string, error) {
	t.Helper()
	var fix image.CheckFix
	switch mode {
	case "leaks":
		fix = image.FixLeaks
	case "all":
		fix = image.FixLeaks | image.FixErrors
	}
	claim := image.ClaimRead
	if fix != 0 {
		claim = image.ClaimWrite
	}
	n, err := image.Open(path, image.OpenOptions{Format: "qcow2", Writable: fix != 0, Claim: claim,
		NoBacking: true, Check: true, User: "check"})
	if err != nil {
		return nil, "", err
	}
	var log bytes.Buffer
	r, err := image.Check(n, fix, &log)
	if cerr := n.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return r, log.String(), err
}

func guestSum(t *testing.T, path string) [32]byte {
	t.Helper()
	raw := path + ".guest"
	defer os.Remove(raw)
	chkMust(t, "qemu-img", "convert", "-O", "raw", path, raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestCheckDamage(t *testing.T) {
	chkNeedQemu(t)
	for _, c := range chkCases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			orig := filepath.Join(dir, "orig.qcow2")
			c.build(t, orig)
			b, err := os.ReadFile(orig)
			if err != nil {
				t.Fatal(err)
			}
			m := parseChkImage(t, b)
			c.harm(t, m)
			if err := os.WriteFile(orig, m.b, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, mode := range []string{"", "leaks", "all"} {
				checkAgainstQemu(t, c, orig, mode)
			}
		})
	}
}

// checkAgainstQemu checks (and repairs) two copies of orig, one with
// qemu-img, one with qimg, and compares everything.
func checkAgainstQemu(t *testing.T, c chkCase, orig, mode string) {
	t.Helper()
	dir := filepath.Dir(orig)
	want := filepath.Join(dir, "qemu-"+mode+".qcow2")
	got := filepath.Join(dir, "qimg-"+mode+".qcow2")
	b, _ := os.ReadFile(orig)
	for _, p := range []string{want, got} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"check", "--output=json"}
	if mode != "" {
		args = append(args, "-r", mode)
	}
	qout, qerr, qrc := chkRun(t, "qemu-img", append(args, want)...)
	r, log, err := qimgCheck(t, got, mode)
	what := "check"
	if mode != "" {
		what = "check -r " + mode
	}
	if rc := qemuExit(r, err); rc != qrc {
		t.Errorf("%s: exit %d, qemu-img %d (error %v; qemu-img: %s)", what, rc, qrc, err, qerr)
	}
	if gl, ql := logLines(log), logLines(qerr); strings.Join(gl, "\n") != strings.Join(ql, "\n") {
		t.Errorf("%s: messages differ\nqimg:\n%s\nqemu-img:\n%s", what, strings.Join(gl, "\n"), strings.Join(ql, "\n"))
	}
	if err != nil {
		last := logLines(strings.ReplaceAll(qerr, "qemu-img: ", "\n"))
		if qrc != 1 || len(last) == 0 || !strings.HasSuffix(strings.TrimSpace(qerr), err.Error()) {
			t.Errorf("%s: qimg failed with %q, qemu-img said %q", what, err, strings.TrimSpace(qerr))
		}
	} else {
		var q image.CheckResult
		if jerr := json.Unmarshal([]byte(qout), &q); jerr != nil {
			t.Fatalf("%s: qemu-img JSON: %v\n%s%s", what, jerr, qout, qerr)
		}
		q.Filename, q.Format = "", ""
		g := *r
		g.Filename, g.Format = "", ""
		if g != q {
			t.Errorf("%s: qimg %+v\nqemu-img %+v", what, g, q)
		}
	}
	if mode == "" {
		return
	}
	// the repaired files: the same bytes (bitmaps aside), the same
	// verdict of qemu-img check, the same guest data
	if c.bitmaps {
		return
	}
	if qrc == 1 && qout == "" && !c.dirty {
		// qemu-img's repair failed: what its file holds then depends on
		// what its caches had written when it gave up
		return
	}
	wb, _ := os.ReadFile(want)
	gb, _ := os.ReadFile(got)
	if c.dirty && qrc == 1 && len(wb) > offIncompatibleFeatures+8 && len(gb) > offIncompatibleFeatures+8 {
		wb[offIncompatibleFeatures+7] &^= incompatDirty
		gb[offIncompatibleFeatures+7] &^= incompatDirty
	}
	if !bytes.Equal(wb, gb) {
		t.Errorf("%s: repaired file differs from qemu-img's (first difference at byte %d)", what, chkFirstDiff(wb, gb))
	}
	wj, _, wrc := chkRun(t, "qemu-img", "check", "--output=json", want)
	gj, _, grc := chkRun(t, "qemu-img", "check", "--output=json", got)
	wj = strings.ReplaceAll(wj, want, "X")
	gj = strings.ReplaceAll(gj, got, "X")
	if wrc != grc || wj != gj {
		t.Errorf("%s: qemu-img check after qimg's repair: exit %d\n%s\nafter qemu-img's: exit %d\n%s", what, grc, gj, wrc, wj)
	}
	if wrc <= 1 && grc <= 1 && wj != "" && gj != "" {
		if guestSum(t, want) != guestSum(t, got) {
			t.Errorf("%s: guest data differs from what qemu-img's repair keeps", what)
		}
	}
}

func chkFirstDiff(a, b []byte) int {
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestCheckOneL2ManyTimes: an L1 table of 4M entries that all name one L2
// table is counted without holding the L1 table or a list of its entries
// (the memory stays far below the 32 MiB table) and without reading and
// scanning the table 4M times.
func TestCheckOneL2ManyTimes(t *testing.T) {
	chkNeedQemu(t)
	path := filepath.Join(t.TempDir(), "img.qcow2")
	// 64-bit refcounts: 4M references overflow nothing
	chkMust(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits=64", path, "2047T")
	chkMust(t, "qemu-io", "-c", "write -P 1 0 64k", path)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [offL1TableOffset + 8]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		t.Fatal(err)
	}
	n := int(binary.BigEndian.Uint32(hdr[offL1Size:]))
	l1 := make([]byte, n*8)
	l1Off := int64(binary.BigEndian.Uint64(hdr[offL1TableOffset:]))
	if _, err := f.ReadAt(l1[:8], l1Off); err != nil {
		t.Fatal(err)
	}
	for i := 8; i < len(l1); i += 8 {
		copy(l1[i:], l1[:8])
	}
	if _, err := f.WriteAt(l1, l1Off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l1 = nil

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	r, log, err := qimgCheck(t, path, "")
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	// the L2 table and the data cluster, each counted n times
	want := fmt.Sprintf("reference=%d", n)
	if r.Corruptions != 2 || strings.Count(log, want) != 2 {
		t.Fatalf("%d corruptions, log:\n%s\nwant 2 lines with %s", r.Corruptions, log, want)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	// the open reads the L1 table once; the check adds its bounded buffers
	if limit := uint64(n*8 + 16<<20); allocated > limit {
		t.Errorf("open and check allocated %d MiB for an L1 table of %d MiB", allocated>>20, n*8>>20)
	}
	t.Logf("%d L1 entries: %v, %d MiB allocated", n, time.Since(start), allocated>>20)
}
