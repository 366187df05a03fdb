package parallels

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"qimg/image"
	"qimg/internal/drivertest"

	_ "qimg/formats/file"
)

// Fuzz target of the header and BAT parser, seeded from
// testdata/parallels (an image qemu-img made and wrote, the same with the
// old magic, and one left in use):
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s -fuzzminimizetime 1x ./formats/parallels
var fuzzSeeds = []string{"small.parallels", "old.parallels", "inuse.parallels"}

func TestSeedsOpen(t *testing.T) {
	for _, name := range fuzzSeeds {
		if err := exercise(t, drivertest.Seed(t, formatName, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzOpen opens whole small images, reads, maps and checks them: errors
// are fine, panics, hangs and large allocations are not.
func FuzzOpen(f *testing.F) {
	for _, name := range fuzzSeeds {
		f.Add(drivertest.Seed(f, formatName, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		_ = exercise(t, b)
	})
}

// exercise runs drivertest's walk, then qemu-img check's walk, then
// writes into the image and walks it again. Errors of the writing part
// are not returned: images that fail to open for writing are common.
func exercise(t *testing.T, b []byte) error {
	if err := drivertest.Exercise(t, formatName, b); err != nil {
		return err
	}
	path := filepath.Join(t.TempDir(), "c.parallels")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkImage(path); err != nil {
		return err
	}
	if writeImage(path) == nil {
		return checkImage(path)
	}
	return nil
}

// checkImage opens the image as check does, reads its start and checks it.
func checkImage(path string) error {
	n, err := image.Open(path, image.OpenOptions{Format: formatName, Claim: image.ClaimRead, NoBacking: true, Check: true})
	if err != nil {
		return err
	}
	defer n.Close()
	if _, err := n.ReadAt(make([]byte, min(n.Size(), 1<<20)), 0); err != nil {
		return err
	}
	_, err = image.Check(n, 0, io.Discard)
	return err
}

// writeImage writes at the start, middle and end of the image, the file
// growing by truncation so that fuzzing stays light on the disk.
func writeImage(path string) error {
	n, err := image.Open(path, image.OpenOptions{Format: formatName, Claim: image.ClaimWrite, Writable: true, NoBacking: true,
		DriverOptions: map[string]string{"prealloc-mode": "truncate", "prealloc-size": "0"}})
	if err != nil {
		return err
	}
	buf := make([]byte, 5000)
	for i := range buf {
		buf[i] = byte(i)
	}
	for _, off := range []int64{0, n.Size() / 2, n.Size() - int64(len(buf))} {
		if off < 0 || off+int64(len(buf)) > n.Size() {
			continue
		}
		if _, err := n.WriteAt(buf, off); err != nil {
			break
		}
	}
	return n.Close()
}

// TestHostileHeaders: a BAT of half a billion entries in a file of one
// sector, or a data offset at the end of 32 bits, open with memory that
// follows the file and read as zeroes.
func TestHostileHeaders(t *testing.T) {
	small := drivertest.Seed(t, formatName, "small.parallels")
	for _, c := range []struct {
		name  string
		off   int
		value []byte
	}{
		{"huge BAT", offBatEntries, []byte{0xff, 0xff, 0xff, 0x1f}},
		{"data offset", offDataOff, []byte{0xff, 0xff, 0xff, 0xff}},
		{"entry past the file", headerSize, []byte{0xff, 0xff, 0xff, 0xff}},
		{"data offset far", offDataOff, []byte{0xff, 0xff, 0xff, 0x7f}},
	} {
		b := append([]byte(nil), small[:sectorSize]...)
		copy(b[c.off:], c.value)
		if err := exercise(t, b); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// TestMapHugeUnallocated: block status over a huge image whose BAT ends
// early answers in one step, not one per cluster.
func TestMapHugeUnallocated(t *testing.T) {
	b := append([]byte(nil), drivertest.Seed(t, formatName, "small.parallels")[:sectorSize]...)
	le.PutUint32(b[offTracks:], 1)
	le.PutUint64(b[offSectors:], 1<<50)
	if err := exercise(t, b); err != nil {
		t.Fatal(err)
	}
}
