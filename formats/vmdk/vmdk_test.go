package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "qimg/formats/file"
	"qimg/image"
)

var fuzzSeeds = []string{"sparse.vmdk", "stream.vmdk", "desc.vmdk"}

func seed(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "vmdk", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openBytes writes b to a file and opens it as vmdk; on success it reads
// the first MiB and walks block status for a while.
func openBytes(t testing.TB, b []byte) (*image.Node, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.vmdk")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := image.Open(path, image.OpenOptions{Format: "vmdk", Claim: image.ClaimRead, NoBacking: true})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { n.Close() })
	if _, err := image.CollectInfo(n); err != nil {
		return n, err
	}
	buf := make([]byte, min(n.Size(), 1<<20))
	if _, err := n.ReadAt(buf, 0); err != nil {
		return n, err
	}
	off := int64(0)
	for i := 0; i < 1000 && off < n.Size(); i++ {
		e, err := n.BlockStatus(off, n.Size()-off)
		if err != nil {
			return n, err
		}
		off = e.End()
	}
	return n, nil
}

// FuzzOpen opens whole small images: sparse header, footer, grain
// directory and tables, compressed grains, descriptors. Errors are fine;
// panics, hangs and big allocations are not.
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s -fuzzminimizetime 1x ./formats/vmdk
func FuzzOpen(f *testing.F) {
	for _, name := range fuzzSeeds {
		f.Add(seed(f, name))
	}
	f.Add(vmwareStream(bytes.Repeat([]byte("grain"), 1000)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		_, _ = openBytes(t, b)
	})
}

// FuzzExtentLine checks the extent line parser against its own contract:
// whatever it reads, a name never holds a quote or a line break.
func FuzzExtentLine(f *testing.F) {
	f.Add(`RW 2048 FLAT "x.raw" 0`)
	f.Add(`RW 4192256 SPARSE "a-s001.vmdk"`)
	f.Add(`RDONLY 1 VMFS "y"`)
	f.Fuzz(func(t *testing.T, line string) {
		x, matches := parseExtentLine(line)
		if matches >= 4 && (x.name == "" || bytes.ContainsAny([]byte(x.name), "\"\r\n")) {
			t.Fatalf("%q: name %q", line, x.name)
		}
	})
}

func TestReadSeeds(t *testing.T) {
	for _, c := range []struct {
		name string
		off  int64
		want byte
	}{
		{"sparse.vmdk", 0, 0x11}, {"sparse.vmdk", 64 << 10, 0}, {"sparse.vmdk", 960 << 10, 0x22},
		{"stream.vmdk", 4096, 0x33}, {"stream.vmdk", 512<<10 + 100, 0x44}, {"stream.vmdk", 256 << 10, 0},
	} {
		n, err := openBytes(t, seed(t, c.name))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		buf := make([]byte, 512)
		if _, err := n.ReadAt(buf, c.off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, bytes.Repeat([]byte{c.want}, 512)) {
			t.Errorf("%s at %d: got %x…, want %x", c.name, c.off, buf[:4], c.want)
		}
	}
}

// TestHostileHeaders: fields that would make a reader allocate or loop
// without bound are refused with one error each.
func TestHostileHeaders(t *testing.T) {
	base := seed(t, "sparse.vmdk")
	le := binary.LittleEndian
	for name, patch := range map[string]func(b []byte){
		"capacity":     func(b []byte) { le.PutUint64(b[12:], 1<<62) },
		"granularity":  func(b []byte) { le.PutUint64(b[20:], 1<<40) },
		"gtes":         func(b []byte) { le.PutUint32(b[44:], 0xffffffff) },
		"gd past end":  func(b []byte) { le.PutUint64(b[56:], 1<<40) },
		"grain offset": func(b []byte) { le.PutUint64(b[64:], 1<<50) },
		"footer":       func(b []byte) { le.PutUint64(b[56:], ^uint64(0)) },
	} {
		b := bytes.Clone(base)
		patch(b)
		if _, err := openBytes(t, b); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
	// a deflated grain of 1 GiB, which a small file could inflate to
	stream := seed(t, "stream.vmdk")
	for name, patch := range map[string]func(b []byte){
		"big grain": func(b []byte) { le.PutUint64(b[20:], 0x200000) },
	} {
		b := bytes.Clone(stream)
		patch(b)
		if _, err := openBytes(t, b); !errors.Is(err, image.ErrUnsupported) {
			t.Errorf("%s: %v, want refused before reading", name, err)
		}
	}
}

// TestSparseStatusSkipsMissingTables: block status over a huge extent
// whose grain tables are missing answers in one step per table, not one
// per grain.
func TestSparseStatusSkipsMissingTables(t *testing.T) {
	x := &extent{sectors: 1 << 32, grainSectors: 128, gtEntries: 512, gd: make([]uint32, (1<<32)/(128*512))}
	start := time.Now()
	e, err := x.blockStatus(0, x.end())
	// one step per grain takes seconds; one per table, microseconds
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
	if err != nil || e.Length != x.end() || e.Allocated {
		t.Fatalf("got %+v, %v", e, err)
	}
}

func TestDescriptorValues(t *testing.T) {
	desc := []byte("CID=0Xfe\nparentCID=ffffffff\nparentFileNameHint=\"a b.vmdk\"\ncreateType=\"vmfs\"\n")
	if v, ok := readCID(desc, "CID"); !ok || v != 0xfe {
		t.Errorf("CID %x %v", v, ok)
	}
	if v, ok := readCID(desc, "parentCID"); !ok || v != 0xffffffff {
		t.Errorf("parentCID %x %v", v, ok)
	}
	if v, ok := parentHint(desc); !ok || v != "a b.vmdk" {
		t.Errorf("hint %q %v", v, ok)
	}
	if v, ok := descriptionValue(desc, "createType"); !ok || v != "vmfs" {
		t.Errorf("createType %q %v", v, ok)
	}
	if _, ok := parentHint([]byte(`parentFileNameHint="unterminated`)); ok {
		t.Error("unterminated hint accepted")
	}
}
