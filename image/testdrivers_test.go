package image

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
)

// Test-only drivers: an in-memory protocol ("mem:NAME") and two formats
// over it, registered under names no real driver uses.
//
//   - testfmt: a format with metadata. Its file starts with a 512-byte
//     header "TESTFMT\n" followed by the backing file's name and a
//     newline; guest data follows the header.
//   - testraw: a format without metadata that passes its users' claims to
//     its file unchanged, like raw.

const (
	memPrefix   = "mem:"
	testMagic   = "TESTFMT\n"
	testHdrSize = 512
)

func init() {
	// "mem:NAME" names the protocol "mem", as "nbd:..." names nbd
	Register(&Format{Name: "mem", Protocol: true, OpenProtocol: memOpen})
	Register(&Format{
		Name: "testfmt",
		Probe: func(h []byte, _ string) int {
			if bytes.HasPrefix(h, []byte(testMagic)) {
				return 100
			}
			return 0
		},
		Open: testfmtOpen,
	})
	Register(&Format{Name: "testraw", Open: testrawOpen, FileClaim: PassThroughClaim})
}

// memStore holds the in-memory files and what happened to them.
type memStore struct {
	mu    sync.Mutex
	files map[string]*memData
}

type memData struct {
	data []byte
	// perm and shared are the last lock state SetPerm applied; refuse
	// simulates another process: SetPerm fails when the new claim needs a
	// permission in refuse.
	perm, shared Perm
	refuse       Perm
	opens        int // descriptors open
	reads        int // ReadAt calls
	reopens      int
}

var mem = &memStore{files: map[string]*memData{}}

// memPut creates or replaces an in-memory file.
func memPut(name string, data []byte) *memData {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	d := &memData{data: data}
	mem.files[name] = d
	return d
}

func memGet(name string) *memData {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	return mem.files[name]
}

// testImage builds a testfmt image naming backing ("" for none) with size
// bytes of guest data.
func testImage(backing string, size int) []byte {
	return testImageDF(backing, "", size)
}

// testImageDF is testImage with an external data file named too.
func testImageDF(backing, dataFile string, size int) []byte {
	b := make([]byte, testHdrSize+size)
	copy(b, testMagic+backing+"\n"+dataFile+"\n")
	return b
}

type memFile struct {
	name     string
	d        *memData
	writable bool
	closed   bool
}

func memOpen(filename string, o ProtocolOptions) (Driver, error) {
	name := strings.TrimPrefix(filename, memPrefix)
	d := memGet(name)
	if d == nil {
		return nil, Errorf(nil, "Could not open '%s': No such file or directory", filename)
	}
	mem.mu.Lock()
	d.opens++
	mem.mu.Unlock()
	return &memFile{name: name, d: d, writable: o.Writable}, nil
}

func (f *memFile) Size() int64 { return int64(len(f.d.data)) }

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	mem.mu.Lock()
	f.d.reads++
	mem.mu.Unlock()
	return copy(p, f.d.data[off:]), nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if !f.writable {
		return 0, ErrReadOnly
	}
	return copy(f.d.data[off:], p), nil
}

func (f *memFile) BlockStatus(off, length int64) (Extent, error) {
	return Extent{Offset: off, Length: length, Allocated: true, Data: true, HostOffset: off}, nil
}

func (f *memFile) Close() error {
	if f.closed {
		return fmt.Errorf("mem:%s closed twice", f.name)
	}
	f.closed = true
	mem.mu.Lock()
	defer mem.mu.Unlock()
	f.d.opens--
	if f.d.opens == 0 {
		// the last descriptor's locks go with it
		f.d.perm, f.d.shared = 0, PermLockable
	}
	return nil
}

func (f *memFile) Identity() string { return f.name }

func (f *memFile) SetPerm(perm, shared Perm) error {
	mem.mu.Lock()
	defer mem.mu.Unlock()
	if bad := perm & f.d.refuse; bad != 0 {
		return &LockError{Filename: f.name, Perm: bad.Bits()[0]}
	}
	f.d.perm, f.d.shared = perm, shared
	return nil
}

func (f *memFile) Reopen(writable bool) error {
	mem.mu.Lock()
	f.d.reopens++
	mem.mu.Unlock()
	f.writable = writable
	return nil
}

// testfmt: guest data after a header naming the backing file.
type testFmt struct {
	file     *Node
	backing  string
	bnode    *Node
	dataFile string
	dnode    *Node
	writable bool // told by OpenContext and Reopen
	reopens  int
}

func testfmtOpen(o *OpenContext) (Driver, error) {
	if o.File.Size() < testHdrSize {
		return nil, Errorf(ErrWrongFormat, "%s: not a testfmt image", o.Filename)
	}
	h := make([]byte, testHdrSize)
	if _, err := o.File.ReadAt(h, 0); err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(h, []byte(testMagic)) {
		return nil, Errorf(ErrWrongFormat, "%s: not a testfmt image", o.Filename)
	}
	rest := h[len(testMagic):]
	name, rest, _ := bytes.Cut(rest, []byte("\n"))
	df, _, _ := bytes.Cut(rest, []byte("\n"))
	return &testFmt{file: o.File, backing: string(name), dataFile: string(df), writable: o.Writable}, nil
}

func (t *testFmt) Size() int64 { return t.file.Size() - testHdrSize }
func (t *testFmt) ReadAt(p []byte, off int64) (int, error) {
	return t.file.ReadAt(p, off+testHdrSize)
}
func (t *testFmt) WriteAt(p []byte, off int64) (int, error) {
	return t.file.WriteAt(p, off+testHdrSize)
}
func (t *testFmt) BlockStatus(off, length int64) (Extent, error) {
	// allocated only in its first half, so chains have something to resolve
	half := t.Size() / 2
	if off < half {
		return Extent{Offset: off, Length: min(length, half-off), Allocated: true, Data: true, HostOffset: off + testHdrSize}, nil
	}
	return Extent{Offset: off, Length: length, HostOffset: -1}, nil
}
func (t *testFmt) Close() error                  { return nil }
func (t *testFmt) BackingFile() (string, string) { return t.backing, "" }
func (t *testFmt) SetBacking(n *Node)            { t.bnode = n }
func (t *testFmt) DataFile() string              { return t.dataFile }
func (t *testFmt) SetDataFile(n *Node)           { t.dnode = n }
func (t *testFmt) Reopen(writable bool) error {
	t.writable = writable
	t.reopens++
	return nil
}

// testraw: guest bytes are the file's bytes.
type testRaw struct{ file *Node }

func testrawOpen(o *OpenContext) (Driver, error) { return &testRaw{file: o.File}, nil }

func (r *testRaw) Size() int64                              { return r.file.Size() }
func (r *testRaw) ReadAt(p []byte, off int64) (int, error)  { return r.file.ReadAt(p, off) }
func (r *testRaw) WriteAt(p []byte, off int64) (int, error) { return r.file.WriteAt(p, off) }
func (r *testRaw) BlockStatus(off, length int64) (Extent, error) {
	return r.file.BlockStatus(off, length)
}
func (r *testRaw) Close() error { return nil }
