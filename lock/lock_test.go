//go:build linux

// These tests count on OFD semantics: two descriptions of one process
// conflict. With POSIX locks (the fallback, -tags qimg_posixlocks or
// qimg_portable) the package tells the process's descriptions apart
// itself, and the same tests pass, but for closing a descriptor the
// package does not know of.

package lock

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"qimg/internal/qemutest"
)

// twoFiles opens one file twice: two open file descriptions, whose OFD
// locks conflict with each other as those of two processes do.
func twoFiles(t *testing.T) (path string, a, b *File) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, openLock(t, path), openLock(t, path)
}

func TestSetTakesQemuBytes(t *testing.T) {
	for _, tc := range []struct {
		name         string
		perm, shared uint8
		want         []int64
	}{
		{"nothing", 0, bAll, nil},
		{"read shares all (qemu-io -r -f raw)", bRead, bAll, []int64{100}},
		{"read write shares all (qemu-io -f raw)", bRead | bWrite, bAll, []int64{100, 101}},
		{"qcow2 file read-only (qemu-io -r -f qcow2)", bRead, bRead | bWU, []int64{100, 201, 203}},
		{"qcow2 file read/write (qemu-io -f qcow2)", bRead | bWrite | bSize, bRead | bWU, []int64{100, 101, 103, 201, 203}},
		{"create (qemu-img create -f raw)", bWrite | bSize, bAll &^ bSize, []int64{101, 103, 203}},
		{"everything, share nothing", bAll, 0, []int64{100, 101, 102, 103, 200, 201, 202, 203}},
		{"bits above 3 are ignored", 0xf0 | bRead, 0xff, []int64{100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, a, _ := twoFiles(t)
			if err := a.Set(tc.perm, tc.shared); err != nil {
				t.Fatal(err)
			}
			if got := qemutest.LockedBytes(t, path); !slices.Equal(got, tc.want) {
				t.Errorf("locked bytes %v, want %v", got, tc.want)
			}
			if err := a.Release(); err != nil {
				t.Fatal(err)
			}
			if got := qemutest.LockedBytes(t, path); len(got) != 0 {
				t.Errorf("after Release locked bytes %v, want none", got)
			}
		})
	}
}

// TestConflictMatrix checks every permission bit both ways between two
// file descriptions: holding a bit against refusing to share it.
func TestConflictMatrix(t *testing.T) {
	for bit := uint(0); bit < Bits; bit++ {
		p := uint8(1) << bit
		t.Run(fmt.Sprintf("bit%d", bit), func(t *testing.T) {
			path, a, b := twoFiles(t)
			// a holds p and shares everything.
			if err := a.Set(p, bAll); err != nil {
				t.Fatal(err)
			}
			// b may hold p too, and every other bit.
			if err := b.Set(bAll, bAll); err != nil {
				t.Fatalf("holding alongside: %v", err)
			}
			// b may refuse the other bits but not p.
			if err := b.Set(bAll, p); err != nil {
				t.Fatalf("refusing other bits: %v", err)
			}
			if err := b.Set(bAll, 0); !isConflict(err, bit, true) {
				t.Fatalf("refusing held bit: got %v, want shared conflict on bit %d", err, bit)
			}
			// the failed Set left b's previous locks exactly
			if perm, unshar := b.Held(); perm != bAll || unshar != bAll&^p {
				t.Fatalf("after failed Set held %04b/%04b, want %04b/%04b", perm, unshar, bAll, bAll&^p)
			}
			want := []int64{100, 101, 102, 103}
			for i := uint(0); i < Bits; i++ {
				if i != bit {
					want = append(want, 200+int64(i))
				}
			}
			if got := qemutest.LockedBytes(t, path); !slices.Equal(got, want) {
				t.Fatalf("after failed Set locked bytes %v, want %v", got, want)
			}

			// Now the other way: b refuses p while holding nothing.
			if err := b.Release(); err != nil {
				t.Fatal(err)
			}
			if err := a.Release(); err != nil {
				t.Fatal(err)
			}
			if err := a.Set(0, bAll&^p); err != nil {
				t.Fatal(err)
			}
			if err := b.Set(p, bAll); !isConflict(err, bit, false) {
				t.Fatalf("claiming refused bit: got %v, want conflict on bit %d", err, bit)
			}
			if perm, unshar := b.Held(); perm != 0 || unshar != 0 {
				t.Fatalf("after failed Set held %04b/%04b, want nothing", perm, unshar)
			}
			if err := b.Set(bAll&^p, bAll&^p); err != nil {
				t.Fatalf("claiming other bits while refusing p too: %v", err)
			}
			// Two refusers of the same bit do not conflict.
			if err := b.Set(0, 0); err != nil {
				t.Fatalf("refusing alongside: %v", err)
			}
			// Released: p is free to take.
			if err := a.Release(); err != nil {
				t.Fatal(err)
			}
			if err := b.Release(); err != nil {
				t.Fatal(err)
			}
			if err := b.Set(p, bAll); err != nil {
				t.Fatalf("after release: %v", err)
			}
		})
	}
}

// TestSetUpAndDown changes one description's claims up and down and checks
// what another description can do after each step.
func TestSetUpAndDown(t *testing.T) {
	path, a, b := twoFiles(t)
	steps := []struct {
		perm, shared uint8
		bytes        []int64
		// what b can claim afterwards (holding, sharing everything) and refuse
		bMayHold, bMayRefuse uint8
	}{
		{bRead, bAll, []int64{100}, bAll, bAll &^ bRead},
		{bRead | bWrite | bSize, bRead | bWU, []int64{100, 101, 103, 201, 203}, bRead | bWU, bWU},
		{bRead, bRead | bWU, []int64{100, 201, 203}, bRead | bWU, bAll &^ bRead},
		{bRead, bAll, []int64{100}, bAll, bAll &^ bRead},
		{0, bAll, nil, bAll, bAll},
	}
	for i, s := range steps {
		if err := a.Set(s.perm, s.shared); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := qemutest.LockedBytes(t, path); !slices.Equal(got, s.bytes) {
			t.Fatalf("step %d: locked bytes %v, want %v", i, got, s.bytes)
		}
		for bit := uint(0); bit < Bits; bit++ {
			p := uint8(1) << bit
			err := b.Set(p, bAll)
			if (err == nil) != (s.bMayHold&p != 0) {
				t.Errorf("step %d: b holding bit %d: %v", i, bit, err)
			}
			b.Release()
			err = b.Set(0, bAll&^p)
			if (err == nil) != (s.bMayRefuse&p != 0) {
				t.Errorf("step %d: b refusing bit %d: %v", i, bit, err)
			}
			b.Release()
		}
	}
}

// TestReservedBytesUntouched: byte 0 (libvirt's) and bytes 104/204 (QEMU
// 6.1's graph-mod bit) are neither locked nor tested. Another description
// holds exclusive locks on them; every Set still succeeds.
func TestReservedBytesUntouched(t *testing.T) {
	path, a, _ := twoFiles(t)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{0, 104, 204} {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Start: off, Len: 1}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range [][2]uint8{{bAll, 0}, {bAll, bAll}, {0, 0}, {0xff, 0}} {
		if err := a.Set(c[0], c[1]); err != nil {
			t.Fatalf("Set(%04b, %04b) with 0/104/204 locked elsewhere: %v", c[0], c[1], err)
		}
	}
	if err := a.Set(0xff, 0); err != nil {
		t.Fatal(err)
	}
	want := []int64{0, 100, 101, 102, 103, 104, 200, 201, 202, 203, 204}
	if got := qemutest.LockedBytes(t, path); !slices.Equal(got, want) {
		t.Fatalf("locked bytes %v, want %v (0, 104, 204 by the other description only)", got, want)
	}
	f.Close()
	if Fallback {
		return // closing any descriptor of the file dropped the process's POSIX locks
	}
	want = []int64{100, 101, 102, 103, 200, 201, 202, 203}
	if got := qemutest.LockedBytes(t, path); !slices.Equal(got, want) {
		t.Fatalf("locked bytes %v, want %v", got, want)
	}
}

// TestCloseDropsLocks: closing the descriptor releases its OFD locks.
func TestCloseDropsLocks(t *testing.T) {
	path, _, b := twoFiles(t)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	a := New(int(f.Fd()))
	if err := a.Set(bAll, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Set(bRead, bAll); err == nil {
		t.Fatal("claim against a refuser succeeded")
	}
	f.Close()
	a.AfterClose()
	if got := qemutest.LockedBytes(t, path); len(got) != 0 {
		t.Fatalf("locked bytes after close %v", got)
	}
	if err := b.Set(bAll, 0); err != nil {
		t.Fatal(err)
	}
}

// TestBadDescriptor: errors from fcntl come back as errors.
func TestBadDescriptor(t *testing.T) {
	err := New(-1).Set(bRead, bAll)
	if err == nil || err.Error() != "Failed to lock byte 100: Bad file descriptor" || !errors.Is(err, unix.EBADF) {
		t.Fatalf("Set on fd -1: %v", err)
	}
}

func TestConflictText(t *testing.T) {
	for _, c := range []Conflict{{Bit: 1}, {Bit: 3, Shared: true}} {
		if s := c.Error(); !strings.Contains(s, strconv.Itoa(int(c.Bit))) {
			t.Errorf("%q does not name bit %d", s, c.Bit)
		}
	}
}

// TestInherit moves the locks to a second description of the same file,
// as a reopen does, without the first one's locks conflicting with it.
func TestInherit(t *testing.T) {
	path, _, other := twoFiles(t)
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	old := New(int(f.Fd()))
	if err := old.Set(bRead|bWrite|bSize, bRead|bWU); err != nil {
		t.Fatal(err)
	}
	nw := openLock(t, path)
	if err := nw.Inherit(old); err != nil {
		t.Fatal(err)
	}
	if p, u := nw.Held(); p != bRead|bWrite|bSize || u != bWrite|bSize {
		t.Fatalf("inherited %04b/%04b", p, u)
	}
	f.Close()
	old.AfterClose()
	want := []int64{100, 101, 103, 201, 203}
	if got := qemutest.LockedBytes(t, path); !slices.Equal(got, want) {
		t.Fatalf("locked bytes %v, want %v", got, want)
	}
	if err := other.Set(bWrite, bAll); !isConflict(err, 1, false) {
		t.Fatalf("claim against the inherited locks: %v", err)
	}
	// and the new description changes them as its own
	if err := nw.Set(bRead, bAll); err != nil {
		t.Fatal(err)
	}
	if err := other.Set(bWrite, bAll); err != nil {
		t.Fatal(err)
	}
}

// TestRandomTransitions drives two descriptions through random Set calls
// and checks each outcome against a model of QEMU's rules: a Set succeeds
// unless it holds a bit the other refuses or refuses a bit the other
// holds; a refused Set changes nothing. A third description checks every
// byte after each step.
func TestRandomTransitions(t *testing.T) {
	path, a, b := twoFiles(t)
	probe := openLock(t, path)
	type state struct{ perm, unshar uint8 }
	files := []*File{a, b}
	model := []state{{}, {}}
	r := rand.New(rand.NewPCG(11, 12))
	for step := 0; step < 300; step++ {
		i := r.IntN(2)
		perm, shared := uint8(r.IntN(16)), uint8(r.IntN(16))
		other := model[1-i]
		ok := perm&other.unshar == 0 && ^shared&bAll&other.perm == 0
		err := files[i].Set(perm, shared)
		if ok != (err == nil) {
			t.Fatalf("step %d: Set(%04b, %04b) on %d against %+v: %v", step, perm, shared, i, other, err)
		}
		if ok {
			model[i] = state{perm, ^shared & bAll}
		}
		for j, f := range files {
			if p, u := f.Held(); p != model[j].perm || u != model[j].unshar {
				t.Fatalf("step %d: description %d holds %04b/%04b, model %+v", step, j, p, u, model[j])
			}
		}
		for bit := uint(0); bit < Bits; bit++ {
			m := uint8(1) << bit
			held, err := probe.test(permBase + int64(bit))
			if err != nil {
				t.Fatal(err)
			}
			refused, err := probe.test(sharedBase + int64(bit))
			if err != nil {
				t.Fatal(err)
			}
			if held != ((model[0].perm|model[1].perm)&m != 0) || refused != ((model[0].unshar|model[1].unshar)&m != 0) {
				t.Fatalf("step %d: bit %d held %v refused %v, model %+v", step, bit, held, refused, model)
			}
		}
	}
}
