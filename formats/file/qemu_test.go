//go:build linux

package file

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

type mapEntry struct {
	Start  int64  `json:"start"`
	Length int64  `json:"length"`
	Data   bool   `json:"data"`
	Zero   bool   `json:"zero"`
	Offset *int64 `json:"offset"`
}

// runs walks BlockStatus over the whole file and merges neighbours of the
// same kind, as qemu-img map does.
func runs(t *testing.T, d *File) []mapEntry {
	t.Helper()
	var out []mapEntry
	for off := int64(0); off < d.Size(); {
		e, err := d.BlockStatus(off, d.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		if e.Offset != off || e.Length <= 0 {
			t.Fatalf("bad extent %+v at %d", e, off)
		}
		if !e.Allocated || e.HostOffset != off {
			t.Fatalf("extent %+v: a file's bytes are allocated at their own offset", e)
		}
		if n := len(out); n > 0 && out[n-1].Data == e.Data && out[n-1].Zero == e.Zero {
			out[n-1].Length += e.Length
		} else {
			o := e.HostOffset
			out = append(out, mapEntry{Start: off, Length: e.Length, Data: e.Data, Zero: e.Zero, Offset: &o})
		}
		off = e.End()
	}
	return out
}

func showMap(m []mapEntry) string {
	var b strings.Builder
	for _, e := range m {
		off := "-"
		if e.Offset != nil {
			off = fmt.Sprint(*e.Offset)
		}
		fmt.Fprintf(&b, "[%d,+%d data=%v zero=%v off=%s] ", e.Start, e.Length, e.Data, e.Zero, off)
	}
	return b.String()
}

// TestBlockStatusMatchesQemu compares the data and zero runs of sparse
// files with qemu-img map's on the same file.
func TestBlockStatusMatchesQemu(t *testing.T) {
	qemuImg := qemutest.Need(t, "qemu-img")
	r := rand.New(rand.NewPCG(5, 6))
	layouts := map[string]func(f *os.File){
		"empty 1M": func(f *os.File) { f.Truncate(1 << 20) },
		"all data": func(f *os.File) { f.Write(randBytes(r, 300000)) },
		"holes and data": func(f *os.File) {
			f.Truncate(4 << 20)
			f.WriteAt([]byte("x"), 70000)
			f.WriteAt(randBytes(r, 12288), 409600)
			f.WriteAt(randBytes(r, 100), 4<<20-100)
		},
		"data at both ends, unaligned size": func(f *os.File) {
			f.WriteAt(randBytes(r, 5000), 0)
			f.Truncate(3<<20 + 1234)
			f.WriteAt([]byte("y"), 3<<20+1000)
		},
		"scattered": func(f *os.File) {
			f.Truncate(8 << 20)
			for i := 0; i < 40; i++ {
				f.WriteAt(randBytes(r, 1+r.IntN(70000)), r.Int64N(8<<20-70000))
			}
		},
	}
	for name, make := range layouts {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, nil)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			make(f)
			f.Close()
			out, err := exec.Command(qemuImg, "map", "--output=json", "-f", "raw", path).Output()
			if err != nil {
				t.Fatalf("qemu-img map: %v", err)
			}
			var want []mapEntry
			if err := json.Unmarshal(out, &want); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if !findsHoles {
				// a build that cannot see holes reports the whole
				// file as data, as qemu does where SEEK_DATA fails
				st, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				zero := int64(0)
				want = []mapEntry{{Length: roundUp(st.Size(), 512), Data: true, Offset: &zero}}
			}
			for _, cache := range []string{"writeback", "none"} {
				d := openT(t, path, false, cache)
				got := runs(t, d)
				if showMap(got) != showMap(want) {
					t.Errorf("%s:\n qimg     %s\n qemu-img %s", cache, showMap(got), showMap(want))
				}
			}
		})
	}
}

// TestPreallocMatchesQemu: files grown from empty by qimg and by
// qemu-img create -f raw with the same preallocation take the same room.
func TestPreallocMatchesQemu(t *testing.T) {
	qemuImg := qemutest.Need(t, "qemu-img")
	for _, mode := range []image.Prealloc{image.PreallocOff, image.PreallocFalloc, image.PreallocFull} {
		for _, size := range []int64{0, 512, 4096, 5 << 20} {
			ref := writeFile(t, nil)
			os.Remove(ref)
			if out, err := exec.Command(qemuImg, "create", "-q", "-f", "raw", "-o", "preallocation="+string(mode), ref, fmt.Sprint(size)).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, out)
			}
			path := writeFile(t, nil)
			d := openT(t, path, true, "writeback")
			if err := d.Truncate(size, mode); err != nil {
				t.Fatal(err)
			}
			d.Close()
			rs, _ := os.Stat(ref)
			qs, _ := os.Stat(path)
			if rs.Size() != qs.Size() || allocated(t, ref) != allocated(t, path) {
				t.Errorf("%s %d: qemu-img %d bytes, %d allocated; qimg %d bytes, %d allocated",
					mode, size, rs.Size(), allocated(t, ref), qs.Size(), allocated(t, path))
			}
		}
	}
}

// TestResizeMatchesQemu: growing a file with data by each preallocation
// mode takes the same room as qemu-img resize --preallocation.
func TestResizeMatchesQemu(t *testing.T) {
	qemuImg := qemutest.Need(t, "qemu-img")
	r := rand.New(rand.NewPCG(8, 9))
	head := randBytes(r, 100000)
	for _, mode := range []image.Prealloc{image.PreallocOff, image.PreallocFalloc, image.PreallocFull} {
		for _, size := range []int64{3 << 20, 3<<20 + 512} {
			ref := writeFile(t, head)
			if out, err := exec.Command(qemuImg, "resize", "-q", "-f", "raw", "--preallocation="+string(mode), ref, fmt.Sprint(size)).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img resize: %v: %s", err, out)
			}
			path := writeFile(t, head)
			d := openT(t, path, true, "writeback")
			if err := d.Truncate(size, mode); err != nil {
				t.Fatal(err)
			}
			d.Close()
			rs, _ := os.Stat(ref)
			qs, _ := os.Stat(path)
			if rs.Size() != qs.Size() || allocated(t, ref) != allocated(t, path) {
				t.Errorf("%s %d: qemu-img %d bytes, %d allocated; qimg %d bytes, %d allocated",
					mode, size, rs.Size(), allocated(t, ref), qs.Size(), allocated(t, path))
			}
		}
	}
	// metadata is not a mode files have
	ref := writeFile(t, head)
	out, err := exec.Command(qemuImg, "resize", "-f", "raw", "--preallocation=metadata", ref, "1M").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Unsupported preallocation mode: metadata") {
		t.Fatalf("qemu-img resize metadata: %v: %s", err, out)
	}
	d := openT(t, writeFile(t, head), true, "writeback")
	if err := d.Truncate(1<<20, image.PreallocMetadata); err == nil || err.Error() != "Unsupported preallocation mode: metadata" {
		t.Fatalf("metadata: %v", err)
	}
}
