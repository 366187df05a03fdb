package vpc

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	_ "qimg/formats/file"
	"qimg/image"
	"qimg/internal/qemutest"
)

func seed(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "vpc", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openBytes writes b to a file and opens it as vpc; on success it reads
// the whole image (at most a few MiB) and walks its block status.
func openBytes(t testing.TB, b []byte) (string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.vhd")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := image.Open(path, image.OpenOptions{Format: "vpc", Claim: image.ClaimRead})
	if err != nil {
		return path, err
	}
	defer n.Close()
	buf := make([]byte, 64<<10)
	for off := int64(0); off < min(n.Size(), 4<<20); off += int64(len(buf)) {
		k := min(int64(len(buf)), n.Size()-off)
		if _, err := n.ReadAt(buf[:k], off); err != nil {
			return path, err
		}
	}
	for off, steps := int64(0), 0; off < n.Size() && steps < 1000; steps++ {
		e, err := n.BlockStatus(off, n.Size()-off)
		if err != nil {
			return path, err
		}
		off = e.End()
	}
	return path, nil
}

// poke writes v (big-endian, of v's width) at off and, when footerAt is
// not -1, recomputes the checksum of the footer there.
func poke(b []byte, off int, v any, footerAt int) []byte {
	b = append([]byte(nil), b...)
	switch v := v.(type) {
	case uint32:
		binary.BigEndian.PutUint32(b[off:], v)
	case uint64:
		binary.BigEndian.PutUint64(b[off:], v)
	case string:
		copy(b[off:], v)
	}
	if footerAt >= 0 {
		f := b[footerAt : footerAt+footerSize]
		binary.BigEndian.PutUint32(f[offChecksum:], checksum(f, offChecksum))
	}
	return b
}

// TestHostile: damaged and hostile headers give qemu-img's one-line
// errors, without a panic or an allocation sized by the header; where
// qemu-img is installed, it must give the same words.
func TestHostile(t *testing.T) {
	dyn := seed(t, "dynamic.vhd")
	fixed := seed(t, "fixed.vhd")
	tail := len(fixed) - footerSize
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"block size 0", poke(dyn, 512+offBlockSize, uint32(0), -1), "Invalid block size 0"},
		{"block size 128", poke(dyn, 512+offBlockSize, uint32(128), -1), "Invalid block size 128"},
		{"block size not a power of two", poke(dyn, 512+offBlockSize, uint32(0x12345678), -1), "Invalid block size 305419896"},
		{"huge BAT", poke(dyn, 512+offMaxEntries, uint32(0x7fffffff), -1), "Max Table Entries too large (2147483647)"},
		{"BAT just too large", poke(dyn, 512+offMaxEntries, uint32(0x20000000), -1), "Max Table Entries too large (536870912)"},
		{"BAT longer than a read", poke(dyn, 512+offMaxEntries, uint32(0x1fffffff), -1), "Error reading pagetable"},
		{"BAT past the end", poke(dyn, 512+offMaxEntries, uint32(0x1fffff80), -1), "block-vpc: free_data_block_offset points after the end of file. The image has been truncated."},
		{"BAT too small", poke(dyn, 512+offMaxEntries, uint32(1), -1), "Page table too small"},
		{"BAT offset past the end", poke(dyn, 512+offTableOffset, uint64(0xffff0000), -1), "block-vpc: free_data_block_offset points after the end of file. The image has been truncated."},
		{"BAT offset beyond any file", poke(dyn, 512+offTableOffset, uint64(0x7fffffffffff0000), -1), "Error reading pagetable"},
		{"block past the end", poke(dyn, 1536, uint32(0x100), -1), "block-vpc: free_data_block_offset points after the end of file. The image has been truncated."},
		{"header past the end", poke(dyn, 16, uint64(0x10000), 0), "Invalid header magic"},
		{"header beyond any file", poke(dyn, 16, uint64(0x7fffffffffff0000), 0), "Error reading dynamic VHD header"},
		{"bad checksum", poke(dyn, offChecksum, uint32(1), -1), "Incorrect header checksum"},
		{"bad fixed checksum", poke(fixed, tail+offChecksum, uint32(1), -1), "Incorrect header checksum"},
		{"no footer", poke(fixed, tail, "xonectix", -1), "invalid VPC image"},
		{"end footer not fixed", poke(fixed, tail+offDiskType, uint32(diskDynamic), tail), "invalid VPC image"},
		{"short file", []byte("conect"), "invalid VPC image"},
		{"too large", poke(poke(fixed, tail+offCreatorApp, "win ", -1), tail+offCurrentSize, uint64(0xff000001*512), tail), "Could not open '$PATH': File too large"},
	}
	qemuImg := ""
	if qemutest.Have("qemu-img") {
		qemuImg = qemutest.Need(t, "qemu-img")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path, err := openBytes(t, tc.b)
			tc.want = strings.ReplaceAll(tc.want, "$PATH", path)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if qemuImg == "" {
				return
			}
			out, _ := exec.Command(qemuImg, "info", "-f", "vpc", path).CombinedOutput()
			want := "qemu-img: Could not open '" + path + "': " + tc.want + "\n"
			if string(out) != want {
				t.Errorf("qemu-img says %q, this table %q", out, want)
			}
		})
	}
}

// TestCreatorSize: which creators QEMU 7.2 sizes by the footer's current
// size rather than the geometry, checked against qemu-img.
func TestCreatorSize(t *testing.T) {
	dyn := seed(t, "dynamic.vhd")
	// current size 10 MiB; the geometry says 10514432 bytes
	base := poke(dyn, offCurrentSize, uint64(10<<20), 0)
	for _, tc := range []struct {
		app  string
		want int64
	}{
		{"qemu", 10514432}, {"vpc ", 10514432}, {"wa\x00\x00", 10514432}, {"tap ", 10514432},
		{"qem2", 10 << 20}, {"win ", 10 << 20}, {"d2v ", 10 << 20}, {"CTXS", 10 << 20}, {"tap\x00", 10 << 20},
	} {
		b := poke(base, offCreatorApp, tc.app, 0)
		f := parseFooter(b)
		if got := f.totalSectors(sizeByCreator) * 512; got != tc.want {
			t.Errorf("creator %q: size %d, want %d", tc.app, got, tc.want)
		}
		if !qemutest.Have("qemu-img") {
			continue
		}
		path, err := openBytes(t, b)
		if err != nil {
			t.Fatal(err)
		}
		out := qemutest.Run(t, "qemu-img", "info", "--output=json", path)
		if !strings.Contains(out, `"virtual-size": `+itoa(tc.want)+",") {
			t.Errorf("creator %q: qemu-img says %s", tc.app, out)
		}
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// TestGeometry: the geometry written for sizes around the thresholds of
// the CHS algorithm (17, 31, 63 and 255 sectors per track, the largest
// geometry) is qemu-img's, read from the footers of images it creates.
func TestGeometry(t *testing.T) {
	qemuImg := qemutest.Need(t, "qemu-img")
	dir := t.TempDir()
	for _, sectors := range []int64{1, 69632, 69633, 2088960, 2088961, 8323072, 8323073, 16515072,
		65535*16*63 - 1, 65535 * 16 * 63, 66059265, 133693440, vhdMaxGeometry, vhdMaxGeometry + 1} {
		path := filepath.Join(dir, strconv.FormatInt(sectors, 10)+".vhd")
		qemutest.Run(t, qemuImg, "create", "-q", "-f", "vpc", path, strconv.FormatInt(sectors*512, 10))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f := parseFooter(b[:footerSize])
		want := geometry{f.cylinders, f.heads, f.sectors}
		if got := geometryFor(sectors); got != want {
			t.Errorf("%d sectors: geometry %v, qemu-img writes %v", sectors, got, want)
		}
	}
}

// FuzzOpen opens arbitrary files as vpc: errors, never panics or
// allocations beyond the file's size.
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s -fuzzminimizetime 1x ./formats/vpc
func FuzzOpen(f *testing.F) {
	for _, name := range []string{"dynamic.vhd", "fixed.vhd", "qem2.vhd"} {
		f.Add(seed(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		_, _ = openBytes(t, b)
	})
}

// TestForceSizeCalc: the force_size_calc open option chooses the geometry
// or the footer's current size whatever the creator, but an image of the
// largest geometry keeps its current size; a bad value is refused in
// qemu's words. Checked against qemu-img info --image-opts.
func TestForceSizeCalc(t *testing.T) {
	dyn := seed(t, "dynamic.vhd")
	// current size 10 MiB; the geometry says 10514432 bytes
	base := poke(dyn, offCurrentSize, uint64(10<<20), 0)
	for _, tc := range []struct {
		app, calc string
		want      int64
	}{
		{"qemu", "", 10514432}, {"qemu", "chs", 10514432}, {"qemu", "current_size", 10 << 20},
		{"win ", "", 10 << 20}, {"win ", "chs", 10514432}, {"win ", "current_size", 10 << 20},
		{"qemu", "bogus", -1},
	} {
		b := poke(base, offCreatorApp, tc.app, 0)
		path := filepath.Join(t.TempDir(), "img.vhd")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		opts := map[string]string{}
		if tc.calc != "" {
			opts["force_size_calc"] = tc.calc
		}
		n, err := image.Open(path, image.OpenOptions{Format: "vpc", Claim: image.ClaimRead, DriverOptions: opts})
		switch {
		case tc.want < 0 && (err == nil || err.Error() != "Invalid size calculation mode: 'bogus'"):
			t.Errorf("force_size_calc=bogus: %v", err)
		case tc.want < 0:
		case err != nil:
			t.Fatalf("%q %q: %v", tc.app, tc.calc, err)
		default:
			if n.Size() != tc.want {
				t.Errorf("creator %q, force_size_calc %q: size %d, want %d", tc.app, tc.calc, n.Size(), tc.want)
			}
			n.Close()
		}
		if !qemutest.Have("qemu-img") {
			continue
		}
		spec := "driver=vpc,file.filename=" + path
		if tc.calc != "" {
			spec += ",force_size_calc=" + tc.calc
		}
		out, _ := exec.Command("qemu-img", "info", "--output=json", "--image-opts", spec).CombinedOutput()
		if tc.want < 0 {
			if !strings.Contains(string(out), "Invalid size calculation mode: 'bogus'") {
				t.Errorf("qemu-img says %s", out)
			}
		} else if !strings.Contains(string(out), `"virtual-size": `+itoa(tc.want)+",") {
			t.Errorf("creator %q, force_size_calc %q: qemu-img says %s", tc.app, tc.calc, out)
		}
	}
}
