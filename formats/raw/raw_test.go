package raw_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"qimg/formats/file"
	_ "qimg/formats/raw"
	"qimg/image"
	"qimg/internal/qemutest"
)

func newRaw(t *testing.T, size int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func sector(head string) []byte {
	b := make([]byte, 512)
	copy(b, head)
	return b
}

// headWrites are writes into the first sector of an image that probes as
// raw, with whether they make it probe as something else.
var headWrites = []struct {
	name    string
	data    []byte
	off     int64
	refused bool
}{
	{"zeroes", make([]byte, 512), 0, false},
	{"text", sector("hello"), 0, false},
	{"qcow2 header", sector("QFI\xfb\x00\x00\x00\x03"), 0, true},
	{"qcow2 magic alone", []byte("QFI\xfb\x00\x00\x00\x03"), 0, true},
	{"qcow v1 header", sector("QFI\xfb\x00\x00\x00\x01"), 0, true},
	{"vhdx magic", sector("vhdxfile"), 0, true},
	{"vpc magic", sector("conectix"), 0, true},
	{"vmdk magic", sector("KDMV"), 0, true},
	{"vmdk descriptor", sector("# Disk DescriptorFile\nversion=1\n"), 0, true},
	{"luks v1", sector("LUKS\xba\xbe\x00\x01"), 0, true},
	{"luks v2 (raw for QEMU 7.2)", sector("LUKS\xba\xbe\x00\x02"), 0, false},
	{"magic past the first sector", sector("QFI\xfb\x00\x00\x00\x03"), 512, false},
	{"magic across the first sector's end", []byte("xxxxQFI\xfb"), 508, false},
	{"two sectors, the first a qcow2 header", append(sector("QFI\xfb\x00\x00\x00\x03"), make([]byte, 512)...), 0, true},
	{"magic at offset 4 (vdi's place is 0x40)", sector("\x00\x00\x00\x00QFI\xfb"), 0, false},
}

// TestProbedHeadProtected: writes that would make a probed raw image
// probe as another format fail with EPERM, as in qemu-io; given -f raw
// they pass. Each case is run through qemu-io on the same file too.
func TestProbedHeadProtected(t *testing.T) {
	for _, tc := range headWrites {
		t.Run(tc.name, func(t *testing.T) {
			for _, format := range []string{"", "raw"} {
				path := newRaw(t, 1<<20)
				n, err := image.Open(path, image.OpenOptions{Format: format, Writable: true, Claim: image.ClaimWrite})
				if err != nil {
					t.Fatal(err)
				}
				if n.Probed != (format == "") {
					t.Fatalf("probed %v with -f %q", n.Probed, format)
				}
				_, err = n.WriteAt(tc.data, tc.off)
				want := tc.refused && format == ""
				if want != (err != nil) {
					t.Fatalf("-f %q: write error %v, want refused=%v", format, err, want)
				}
				if want && (!errors.Is(err, syscall.EPERM) || err.Error() != "Operation not permitted") {
					t.Fatalf("error %q is not EPERM", err)
				}
				if err := n.Close(); err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(path)
				if want && !bytes.Equal(got, make([]byte, 1<<20)) {
					t.Fatal("a refused write changed the file")
				}
				if !want && !bytes.Equal(got[tc.off:tc.off+int64(len(tc.data))], tc.data) {
					t.Fatal("the write did not land")
				}
			}
		})
	}
}

// TestProbedHeadLikeQemu runs the same writes through qemu-io on a probed
// raw image and checks it refuses exactly the same ones.
func TestProbedHeadLikeQemu(t *testing.T) {
	qemuIO := qemutest.Need(t, "qemu-io")
	for _, tc := range headWrites {
		path := newRaw(t, 1<<20)
		src := filepath.Join(t.TempDir(), "data")
		if err := os.WriteFile(src, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := fmt.Sprintf("write -s %s %d %d", src, tc.off, len(tc.data))
		out, _ := exec.Command(qemuIO, "-c", cmd, path).CombinedOutput()
		refused := strings.Contains(string(out), "write failed: Operation not permitted")
		if !refused && !strings.Contains(string(out), "wrote ") {
			t.Fatalf("%s: qemu-io: %s", tc.name, out)
		}
		if refused != tc.refused {
			t.Errorf("%s: qemu-io refused=%v, this table says %v", tc.name, refused, tc.refused)
		}
	}
}

// TestProbedHeadZeroes: zeroing and discarding block 0 of a probed image
// are checked as writes of zeroes would be.
func TestProbedHeadZeroes(t *testing.T) {
	path := newRaw(t, 1<<20)
	// "QED\x01": zeroing its last byte would make a QED magic
	if err := os.WriteFile(path, append(sector("QED\x01"), make([]byte, 1<<20-512)...), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := image.Open(path, image.OpenOptions{Writable: true, Claim: image.ClaimWrite})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.Format != "raw" {
		t.Fatalf("probed as %s", n.Format)
	}
	if err := n.WriteZeroes(3, 1, false); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("zeroing into a QED magic: %v", err)
	}
	if err := n.Discard(3, 1); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("discarding into a QED magic: %v", err)
	}
	if err := n.WriteZeroes(0, 4096, true); err != nil {
		t.Fatalf("zeroing the whole magic: %v", err)
	}
	if err := n.WriteZeroes(4096, 4096, true); err != nil {
		t.Fatal(err)
	}
}

// TestCreate: the size is rounded to sectors, preallocation modes are
// checked with qemu-img's words, before the file is touched.
func TestCreate(t *testing.T) {
	raw, _ := image.Lookup("raw")
	for _, tc := range []struct {
		size     int64
		prealloc string
		wantSize int64
		wantErr  string
	}{
		{100, "off", 512, ""},
		{1 << 20, "falloc", 1 << 20, ""},
		{5, "full", 512, ""},
		{0, "off", 0, ""},
		{1 << 20, "metadata", 0, "Unsupported preallocation mode: metadata"},
		{1 << 20, "bogus", 0, "invalid parameter value: bogus"},
		{7 << 60, "off", 0, "The image size is too large for file format 'raw'"},
	} {
		opts, err := image.ParseOptions("preallocation=" + tc.prealloc)
		if err != nil {
			t.Fatal(err)
		}
		if err := opts.Validate(raw.CreateOptions); err != nil {
			t.Fatal(err)
		}
		if err := raw.CheckCreate(opts, tc.size); tc.wantErr != "" && tc.wantErr != "The image size is too large for file format 'raw'" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("validate %s: %v, want %q", tc.prealloc, err, tc.wantErr)
			}
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "new.raw")
		n, err := image.CreateProtocol(path, "create", image.ClaimCreate)
		if err != nil {
			t.Fatal(err)
		}
		err = raw.Create(&image.CreateContext{File: n, Filename: path, Size: tc.size, Options: opts})
		n.Close()
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("create %d: %v, want %q", tc.size, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(path); st.Size() != tc.wantSize {
			t.Errorf("create %d %s: %d bytes, want %d", tc.size, tc.prealloc, st.Size(), tc.wantSize)
		}
	}
}

func TestHelpOptions(t *testing.T) {
	raw, _ := image.Lookup("raw")
	got := image.HelpText(raw.CreateOptions)
	want := `Supported options:
  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable
  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
`
	if got != want {
		t.Errorf("help:\n%s\nwant (qemu-img create -f raw -o help):\n%s", got, want)
	}
	if &raw.CreateOptions[0] != &file.CreateOptions[0] {
		t.Error("raw's options are not the file protocol's")
	}
}
