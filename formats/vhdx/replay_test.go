package vhdx

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

// Images with a log to replay, made from images qemu-img created by
// writing log entries into them as MS-VHDX describes, then replayed by
// qemu-img (check -r all) and by qimg (a read/write open): both results
// must be the same file but for the GUIDs of the headers.

// testDesc is one descriptor of a test log entry: data written at off, or
// with zero set, length bytes of zeroes at off.
type testDesc struct {
	zero   bool
	off    uint64
	length uint64
	data   []byte // one sector
}

// testEntry is a log entry to write into a test image.
type testEntry struct {
	seq       uint64
	logGUID   guid
	tail      uint32
	flushed   uint64 // flushed file offset
	last      uint64 // last file offset
	descs     []testDesc
	badCRC    bool
	extraLen  uint32 // sectors counted in the length beyond the data
	descSeqAt int    // a descriptor (index+1) with a wrong sequence number
}

// encode lays the entry out: header and descriptor sectors, then a data
// sector per data descriptor, with its checksum.
func (e testEntry) encode() []byte {
	nd := descSectors(uint32(len(e.descs)))
	var data [][]byte
	for _, d := range e.descs {
		if !d.zero {
			data = append(data, d.data)
		}
	}
	b := make([]byte, (int(nd)+len(data)+int(e.extraLen))*logSectorSize)
	copy(b, "loge")
	le.PutUint32(b[8:], uint32(len(b)))
	le.PutUint32(b[12:], e.tail)
	le.PutUint64(b[16:], e.seq)
	le.PutUint32(b[24:], uint32(len(e.descs)))
	copy(b[32:], e.logGUID[:])
	le.PutUint64(b[48:], e.flushed)
	le.PutUint64(b[56:], e.last)
	k := 0
	for i, d := range e.descs {
		p := b[logEntryHead+logDescSize*i:]
		seq := e.seq
		if e.descSeqAt == i+1 {
			seq++
		}
		le.PutUint64(p[16:], d.off)
		le.PutUint64(p[24:], seq)
		if d.zero {
			copy(p, "zero")
			le.PutUint64(p[8:], d.length)
			continue
		}
		copy(p, "desc")
		copy(p[4:8], d.data[logSectorSize-4:])
		copy(p[8:16], d.data[:8])
		s := b[(int(nd)+k)*logSectorSize:]
		copy(s, "data")
		le.PutUint32(s[4:], uint32(e.seq>>32))
		copy(s[8:logSectorSize-4], d.data[8:])
		le.PutUint32(s[logSectorSize-4:], uint32(e.seq))
		k++
	}
	le.PutUint32(b[4:], crc32c(b))
	if e.badCRC {
		b[4] ^= 1
	}
	return b
}

// logImage is a test image and where its log lies.
type logImage struct {
	path      string
	b         []byte
	logOffset uint64
	logLength uint64
}

func newLogImage(t *testing.T, size, opts string, ioCmds ...string) *logImage {
	img := qemuImage(t, size, opts, ioCmds...)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := selectHeader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	// qemu leaves replayed entries in the log: start from an empty one
	clear(b[h.logOffset : h.logOffset+uint64(h.logLength)])
	return &logImage{path: img, b: b, logOffset: h.logOffset, logLength: uint64(h.logLength)}
}

// put writes an entry at index pos of the ring, wrapping at its end.
func (li *logImage) put(pos uint64, e testEntry) {
	for i, b := 0, e.encode(); i < len(b); i += logSectorSize {
		copy(li.b[li.logOffset+(pos+uint64(i))%li.logLength:], b[i:i+logSectorSize])
	}
}

// setLogGUID sets the log GUID of both headers.
func (li *logImage) setLogGUID(g guid) {
	for _, off := range headerOffsets {
		h := li.b[off : off+headerSize]
		copy(h[48:64], g[:])
		resum(h)
	}
}

func (li *logImage) save(t *testing.T) string {
	if err := os.WriteFile(li.path, li.b, 0o644); err != nil {
		t.Fatal(err)
	}
	return li.path
}

func sectorOf(c byte) []byte { return bytes.Repeat([]byte{c}, logSectorSize) }

// copyFile copies src into the test's directory under name.
func copyFile(t *testing.T, src, name string) string {
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// qemuReplay runs qemu-img check -r all --output=json on img, returning
// its output, its messages (without their "qemu-img: ") and whether it
// opened the image.
func qemuReplay(t *testing.T, img string) (string, string, bool) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("qemu-img", "check", "-r", "all", "--output=json", img)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	return stdout.String(), strings.ReplaceAll(stderr.String(), "qemu-img: ", ""), stdout.Len() > 0
}

// qimgReplay opens img read/write for a check, as qimg check -r all does,
// and checks it, returning the result and the check's messages.
func qimgReplay(t *testing.T, img string) (*image.CheckResult, string, error) {
	n, err := image.Open(img, image.OpenOptions{Format: "vhdx", Claim: image.ClaimWrite, Writable: true, NoBacking: true, Check: true})
	if err != nil {
		return nil, "", err
	}
	defer n.Close()
	var log bytes.Buffer
	r, err := image.Check(n, image.FixLeaks|image.FixErrors, &log)
	return r, log.String(), err
}

// sameButGUIDs fails unless a and b are the same file but for the file
// and data write GUIDs (and checksums) of their headers.
func sameButGUIDs(t *testing.T, a, b string) {
	t.Helper()
	x, _ := os.ReadFile(a)
	y, _ := os.ReadFile(b)
	if len(x) != len(y) {
		t.Fatalf("sizes: qemu-img %d, qimg %d", len(x), len(y))
	}
	for _, off := range headerOffsets {
		for _, f := range [][2]int{{0, 4}, {8, 16}, {48, headerSize}} {
			if !bytes.Equal(x[int(off)+f[0]:int(off)+f[1]], y[int(off)+f[0]:int(off)+f[1]]) {
				t.Errorf("header at %#x differs in bytes %d..%d", off, f[0], f[1])
			}
		}
		copy(y[off:off+headerSize], x[off:off+headerSize])
	}
	if i := firstDiff(x, y); i >= 0 {
		t.Fatalf("files differ at %#x", i)
	}
}

func firstDiff(x, y []byte) int {
	for i := range x {
		if x[i] != y[i] {
			return i
		}
	}
	return -1
}

// replayBoth replays img with qemu-img and with qimg and compares the
// outcomes: both succeed with the same files and one corruption fixed, or
// both fail with the same error.
func replayBoth(t *testing.T, img string) {
	t.Helper()
	q, m := copyFile(t, img, "q.vhdx"), copyFile(t, img, "m.vhdx")
	out, messages, ok := qemuReplay(t, q)
	r, log, err := qimgReplay(t, m)
	if !ok {
		if err == nil {
			t.Fatalf("qemu-img fails, qimg replays:\n%s", messages)
		}
		want := strings.TrimSpace(strings.ReplaceAll(strings.SplitN(messages, "\n", 2)[0], q, "IMG"))
		// qemu-img check names the file once more, as qimg check does
		got := "Could not open 'IMG': " + strings.ReplaceAll(err.Error(), m, "IMG")
		if got != want {
			t.Fatalf("errors:\nqemu-img: %s\nqimg:     %s", want, got)
		}
		// qemu-img has changed the headers before it failed; qimg not
		before, _ := os.ReadFile(img)
		after, _ := os.ReadFile(m)
		if !bytes.Equal(before, after) {
			t.Fatal("qimg changed an image whose log it refused")
		}
		return
	}
	if err != nil {
		t.Fatalf("qemu-img replays, qimg fails: %v\n%s", err, out)
	}
	var want image.CheckResult
	if err := json.Unmarshal([]byte(out), &want); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r.CorruptionsFixed != want.CorruptionsFixed || r.Corruptions != want.Corruptions {
		t.Errorf("check: qimg %+v, qemu-img %+v", *r, want)
	}
	if log != messages {
		t.Errorf("check's messages: qimg\n%sqemu-img\n%s", log, messages)
	}
	sameButGUIDs(t, q, m)
	if want.Corruptions == 0 {
		qemutest.Run(t, "qemu-img", "check", m)
		qemutest.Run(t, "qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", q, m)
	}
}

func TestReplayAsQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	g := randomGUID()
	other := randomGUID()
	// these images have their BAT at 2 MiB, metadata at 3 MiB, nothing
	// from 4 to 8 MiB, then blocks 0, 3 and 4: 11 MiB
	const bat = 2 << 20
	cases := []struct {
		name    string
		entries map[uint64]testEntry // by position in the ring
	}{
		{"one data sector", map[uint64]testEntry{
			0: {seq: 1, logGUID: g, flushed: 8 << 20, last: 8 << 20, descs: []testDesc{{off: 4 << 20, data: sectorOf(0x61)}}},
		}},
		{"a run of three, the highest sequence wins over an older run", map[uint64]testEntry{
			0:       {seq: 3, logGUID: g, descs: []testDesc{{off: 4 << 20, data: sectorOf(0x71)}}},
			8 << 10: {seq: 4, logGUID: g, descs: []testDesc{{off: 5 << 20, data: sectorOf(0x72)}}},
			64 << 10: {seq: 9, logGUID: g, descs: []testDesc{
				{off: 4 << 20, data: sectorOf(0x81)},
				{zero: true, off: 4<<20 + 8<<10, length: 8 << 10},
				{off: 6 << 20, data: sectorOf(0x82)},
			}},
			80 << 10:  {seq: 17, logGUID: g, descs: []testDesc{{off: 6 << 20, data: sectorOf(0x83)}}},
			88 << 10:  {seq: 18, logGUID: g, descs: []testDesc{{zero: true, off: 7 << 20, length: 1 << 20}}},
			92 << 10:  {seq: 20, logGUID: g, descs: []testDesc{{off: 4 << 20, data: sectorOf(0x99)}}},
			200 << 10: {seq: 30, logGUID: other, descs: []testDesc{{off: 4 << 20, data: sectorOf(0xaa)}}},
		}},
		{"an entry that wraps at the end of the ring", map[uint64]testEntry{
			1<<20 - 4<<10: {seq: 5, logGUID: g, descs: []testDesc{{off: 4 << 20, data: sectorOf(0x55)}, {off: 5 << 20, data: sectorOf(0x56)}}},
		}},
		{"a BAT entry written through the log", map[uint64]testEntry{
			0: {seq: 2, logGUID: g, flushed: 8 << 20, last: 9 << 20, descs: []testDesc{{off: bat, data: batSector(9<<20 | blockFullyPresent)}}},
		}},
		{"a BAT entry past the end of the file: replayed, then a corruption", map[uint64]testEntry{
			0: {seq: 2, logGUID: g, descs: []testDesc{{off: bat, data: batSector(40<<20 | blockFullyPresent)}}},
		}},
		{"a last file offset past the end, not 1 MiB aligned, grows the file", map[uint64]testEntry{
			0: {seq: 2, logGUID: g, flushed: 8 << 20, last: 13<<20 + 4096, descs: []testDesc{{off: 4 << 20, data: sectorOf(0x12)}}},
		}},
		{"a last file offset past the end, 1 MiB aligned, does not", map[uint64]testEntry{
			0: {seq: 2, logGUID: g, flushed: 8 << 20, last: 14 << 20, descs: []testDesc{{off: 4 << 20, data: sectorOf(0x13)}}},
		}},
		{"zeroes past the end of the file", map[uint64]testEntry{
			0: {seq: 2, logGUID: g, descs: []testDesc{{zero: true, off: 12 << 20, length: 64 << 10}}},
		}},
		{"data past the end of the file", map[uint64]testEntry{
			0: {seq: 2, logGUID: g, descs: []testDesc{{off: 12<<20 + 8<<10, data: sectorOf(0x14)}}},
		}},
		{"an entry with a bad checksum is no entry", map[uint64]testEntry{
			0:        {seq: 2, logGUID: g, badCRC: true, descs: []testDesc{{off: 4 << 20, data: sectorOf(0x15)}}},
			16 << 10: {seq: 1, logGUID: g, descs: []testDesc{{off: 5 << 20, data: sectorOf(0x16)}}},
		}},
		{"a flushed file offset past the end", map[uint64]testEntry{
			0: {seq: 2, logGUID: g, flushed: 64 << 20, descs: []testDesc{{off: 4 << 20, data: sectorOf(0x17)}}},
		}},
		{"a descriptor with another sequence number", map[uint64]testEntry{
			0: {seq: 2, logGUID: g, descSeqAt: 1, descs: []testDesc{{off: 4 << 20, data: sectorOf(0x18)}}},
		}},
		{"an entry longer than its sectors", map[uint64]testEntry{
			0:        {seq: 2, logGUID: g, extraLen: 1, descs: []testDesc{{off: 4 << 20, data: sectorOf(0x19)}}},
			12 << 10: {seq: 3, logGUID: g, descs: []testDesc{{off: 5 << 20, data: sectorOf(0x1a)}}},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			li := newLogImage(t, "64M", "block_size=1M", "write -P 0x11 0 1M", "write -P 0x22 3M 2M")
			for pos, e := range c.entries {
				li.put(pos, e)
			}
			li.setLogGUID(g)
			img := li.save(t)
			if _, err := openImage(img); err == nil {
				t.Fatal("read-only open of an image with a log")
			}
			replayBoth(t, img)
		})
	}
}

// batSector is the first BAT sector of the test images with its first
// entry set.
func batSector(first uint64) []byte {
	b := make([]byte, logSectorSize)
	le.PutUint64(b, first)
	return b
}

// normalizeGUIDs clears what differs between two writers of the same
// changes: the headers' file and data write GUIDs and the log entries'
// GUIDs, with the checksums over them.
func normalizeGUIDs(b []byte) {
	h, _, _ := selectHeader(bytes.NewReader(b), int64(len(b)))
	for _, off := range headerOffsets {
		clear(b[off+4 : off+8])
		clear(b[off+16 : off+48])
	}
	if h == nil {
		return
	}
	for p := h.logOffset; p < h.logOffset+uint64(h.logLength) && p+logSectorSize <= uint64(len(b)); p += logSectorSize {
		if string(b[p:p+4]) == "loge" {
			clear(b[p+4 : p+8])
			clear(b[p+32 : p+48])
		}
	}
}

// qimg writes its log entries where qemu writes them: one after the other
// in the ring with the tail and sequence numbers qemu gives them, from
// the start of the log after each open, and header sequence numbers move
// as qemu moves them. A header with a bad checksum (its reserved bytes
// changed) is rewritten with its own fields, as qemu rewrites it.
func TestLogWritesAsQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	base := qemuImage(t, "64M", "block_size=1M,log_size=1M", "write -P 0x11 0 1M")
	t.Run("clean", func(t *testing.T) { logWritesAsQemu(t, base) })
	b, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	b[header1Offset+1000] ^= 0xff
	le.PutUint64(b[header1Offset+72:], 3<<20) // a log offset only this header has
	bad := filepath.Join(t.TempDir(), "bad.vhdx")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("first header invalid", func(t *testing.T) { logWritesAsQemu(t, bad) })
}

func logWritesAsQemu(t *testing.T, base string) {
	writes := []struct {
		c   byte
		off int64
	}{{0x22, 1 << 20}, {0x23, 5 << 20}, {0x24, 0}, {0x25, 7<<20 + 512}}
	q, m := copyFile(t, base, "q.vhdx"), copyFile(t, base, "m.vhdx")
	for round := 0; round < 2; round++ {
		args := []string{"-f", "vhdx"}
		n, err := image.Open(m, image.OpenOptions{Format: "vhdx", Claim: image.ClaimWrite, Writable: true, NoBacking: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range writes {
			off := w.off + int64(round)*(16<<20)
			args = append(args, "-c", "write -P "+strconv.Itoa(int(w.c))+" "+strconv.FormatInt(off, 10)+" 4k")
			if _, err := n.WriteAt(bytes.Repeat([]byte{w.c}, 4096), off); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		qemutest.Run(t, "qemu-io", append(args, q)...)
	}
	x, _ := os.ReadFile(q)
	y, _ := os.ReadFile(m)
	normalizeGUIDs(x)
	normalizeGUIDs(y)
	if len(x) != len(y) {
		t.Fatalf("sizes: qemu %d, qimg %d", len(x), len(y))
	}
	if i := firstDiff(x, y); i >= 0 {
		t.Fatalf("files differ at %#x", i)
	}
}

// logRunImage is a small image whose log holds a run of entries with data
// and zero descriptors, one wrapping at the end of the ring, beside an
// older run and an entry of another log: the seed of the log fuzz target.
func logRunImage(t *testing.T) string {
	li := newLogImage(t, "8M", "block_size=1M", "write -P 0x11 0 4k")
	g := randomGUID()
	li.put(0, testEntry{seq: 3, logGUID: g, descs: []testDesc{{off: 4 << 20, data: sectorOf(0x71)}}})
	li.put(64<<10, testEntry{seq: 9, logGUID: g, descs: []testDesc{
		{off: 4 << 20, data: sectorOf(0x81)},
		{zero: true, off: 4<<20 + 8<<10, length: 8 << 10},
	}})
	li.put(1<<20-4<<10, testEntry{seq: 10, logGUID: g, descs: []testDesc{{off: 5 << 20, data: sectorOf(0x82)}}})
	li.put(4<<10, testEntry{seq: 11, logGUID: g, last: 9<<20 + 4096, descs: []testDesc{{off: 6 << 20, data: sectorOf(0x83)}}})
	li.put(200<<10, testEntry{seq: 30, logGUID: randomGUID(), descs: []testDesc{{off: 4 << 20, data: sectorOf(0xaa)}}})
	li.setLogGUID(g)
	return li.save(t)
}
