package dmg_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"qimg/cmd"
	"qimg/formats/dmg"
	"qimg/internal/qemutest"
)

// run is one command's stdout, stderr and exit status.
type run struct {
	stdout, stderr string
	code           int
}

// qemuImg runs the real qemu-img.
func qemuImg(t *testing.T, dir string, args ...string) run {
	t.Helper()
	c := exec.Command("qemu-img", args...)
	c.Dir = dir
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return run{out.String(), dropModuleNags(errb.String()), code}
}

// dropModuleNags removes the lines Debian's qemu-img prints on every
// open of a dmg image about its dmg-bz2 and dmg-lzfse modules, which
// its package leaves out ("qemu: module block-block-dmg-bz2 not found,
// do you want to install qemu-block-extra package?"): qimg reads bzip2
// chunks itself and has no modules.
func dropModuleNags(s string) string {
	var keep []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.HasPrefix(l, "qemu: module ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

// qimg runs qimg's command line in-process, called as qemu-img, with its
// standard output and error in files.
func qimg(t *testing.T, dir string, args ...string) run {
	t.Helper()
	outF, _ := os.Create(filepath.Join(t.TempDir(), "out"))
	errF, _ := os.Create(filepath.Join(t.TempDir(), "err"))
	defer outF.Close()
	defer errF.Close()
	oldOut, oldErr, oldArg0, oldDir := os.Stdout, os.Stderr, os.Args[0], must(os.Getwd())
	os.Stdout, os.Stderr, os.Args[0] = outF, errF, "qemu-img"
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	dmg.ResetWarnings()
	code := cmd.Main(append([]string{"qemu-img"}, args...))
	os.Stdout, os.Stderr, os.Args[0] = oldOut, oldErr, oldArg0
	if err := os.Chdir(oldDir); err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(outF.Name())
	errb, _ := os.ReadFile(errF.Name())
	return run{string(out), string(errb), code}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// same runs args with both tools and requires the same output, messages
// and status.
func same(t *testing.T, dir string, args ...string) run {
	t.Helper()
	want, got := qemuImg(t, dir, args...), qimg(t, dir, args...)
	if want != got {
		t.Errorf("%s:\nqemu-img: %+v\nqimg:     %+v", strings.Join(args, " "), want, got)
	}
	return got
}

func writeImage(t *testing.T, b []byte) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x.dmg"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestAsQemu: generated images (resource fork and XML, one or several
// mish blocks, raw, zlib, zero and ignore chunks) show, map and convert
// as with qemu-img, probed by name or named with -f, and read the data
// put in them.
func TestAsQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	chunks := []genChunk{
		rawChunk(pattern(4096, 1)),
		zeroChunk(typeZero, 100),
		zlibChunk(pattern(64<<10, 2)),
		zeroChunk(typeIgnore, 8),
		zlibChunk(make([]byte, 8192)),
		rawChunk(pattern(1024, 3)),
	}
	for _, spec := range []imageSpec{
		{chunks: chunks, blocks: 1, xml: true},
		{chunks: chunks, blocks: 3, xml: true},
		{chunks: chunks, blocks: 1},
		{chunks: chunks, blocks: 2},
		{chunks: chunks[:1], blocks: 1},
	} {
		dir := writeImage(t, spec.build())
		for _, args := range [][]string{
			{"info", "x.dmg"},
			{"info", "--output=json", "-f", "dmg", "x.dmg"},
			{"map", "x.dmg"},
			{"map", "--output=json", "x.dmg"},
			{"check", "x.dmg"},
			{"compare", "x.dmg", "x.dmg"},
		} {
			same(t, dir, args...)
		}
		qemuImg(t, dir, "convert", "-O", "raw", "x.dmg", "want.raw")
		same(t, dir, "convert", "-O", "raw", "x.dmg", "got.raw")
		want, _ := os.ReadFile(filepath.Join(dir, "want.raw"))
		got, _ := os.ReadFile(filepath.Join(dir, "got.raw"))
		if !bytes.Equal(want, got) || !bytes.Equal(got, guest(spec.chunks)) {
			t.Errorf("%+v: data differs from qemu-img's or from the generator's", spec)
		}
	}
}

// TestBzip2BeyondQemu: Debian's qemu-img, built without its dmg-bz2
// module, warns at open and fails to read bzip2 chunks; qimg shows the
// image as qemu-img does and reads them.
func TestBzip2BeyondQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	spec := imageSpec{chunks: []genChunk{rawChunk(pattern(1024, 1)), bzip2Chunk(), zeroChunk(typeZero, 3)}, blocks: 1}
	dir := writeImage(t, spec.build())
	want, got := qemuImg(t, dir, "info", "x.dmg"), qimg(t, dir, "info", "x.dmg")
	if want.stdout != got.stdout || got.stderr != "" {
		t.Errorf("info: qemu-img %+v, qimg %+v", want, got)
	}
	if !strings.Contains(want.stderr, "dmg-bzip2 module is missing") {
		t.Logf("qemu-img reads bzip2 here: %q", want.stderr)
	}
	if r := qimg(t, dir, "convert", "-O", "raw", "x.dmg", "got.raw"); r.code != 0 {
		t.Fatalf("convert: %+v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "got.raw")); !bytes.Equal(b, guest(spec.chunks)) {
		t.Errorf("bzip2 chunk read wrong")
	}
}
