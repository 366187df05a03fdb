package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qimg/create"
	"qimg/image"
	"qimg/internal/qemutest"
)

// createImage creates an image with qimg's create package.
func createImage(t testing.TB, path, opts string, size int64) {
	t.Helper()
	o, err := image.ParseOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	req := create.Request{Filename: path, Format: "qcow2", Size: size, Options: o}
	p, err := create.Prepare(req)
	if err != nil {
		t.Fatalf("prepare %s: %v", opts, err)
	}
	if err := p.Run(); err != nil {
		t.Fatalf("create %s: %v", opts, err)
	}
}

// TestCreateMatchesQemu creates images with qimg and qemu-img and
// compares the files byte for byte: header, extensions, refcount
// structures (including refcount table growth), L1, preallocated L2
// tables and data placement.
func TestCreateMatchesQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "7M")
	cases := []struct {
		opts string
		size string
	}{
		{"", "10M"},
		{"", "0"},
		{"", "100001"},
		{"compat=0.10", "5M"},
		{"cluster_size=512", "1G"},
		{"cluster_size=512,refcount_bits=64", "4G"},
		{"cluster_size=4096,refcount_bits=1", "20M"},
		{"cluster_size=2M,refcount_bits=8", "1T"},
		{"extended_l2=on,compression_type=zstd,lazy_refcounts=on", "3M"},
		{"preallocation=metadata", "200M"},
		{"preallocation=metadata,cluster_size=512,refcount_bits=64", "10M"},
		{"preallocation=metadata,cluster_size=1024,refcount_bits=32", "50M"},
		{"preallocation=metadata,extended_l2=on", "3M"},
		{"preallocation=falloc", "30M"},
		{"preallocation=full,cluster_size=512", "3M"},
		{"preallocation=falloc,extended_l2=on", "5M"},
		{"data_file=" + filepath.Join(dir, "d1.data"), "5M"},
		{"data_file=" + filepath.Join(dir, "d2.data") + ",data_file_raw=on", "5M"},
		{"backing_file=base.qcow2,backing_fmt=qcow2", "-"},
		{"backing_file=base.qcow2,backing_fmt=qcow2,extended_l2=on,preallocation=metadata", "9M"},
	}
	for _, c := range cases {
		t.Run(c.opts+"_"+c.size, func(t *testing.T) {
			want := filepath.Join(dir, "qemu.qcow2")
			got := filepath.Join(dir, "qimg.qcow2")
			os.Remove(want)
			os.Remove(got)
			args := []string{"create", "-q", "-f", "qcow2"}
			if c.opts != "" {
				args = append(args, "-o", c.opts)
			}
			args = append(args, want)
			size := int64(-1)
			if c.size != "-" {
				args = append(args, c.size)
				n, err := image.ParseSize(c.size)
				if err != nil {
					t.Fatal(err)
				}
				size = n
			}
			qemutest.Run(t, "qemu-img", args...)
			opts := strings.ReplaceAll(c.opts, "d1.data", "e1.data")
			opts = strings.ReplaceAll(opts, "d2.data", "e2.data")
			createImage(t, got, opts, size)
			a, _ := os.ReadFile(want)
			b, _ := os.ReadFile(got)
			// the data file names differ by design
			b = bytes.ReplaceAll(b, []byte("e1.data"), []byte("d1.data"))
			b = bytes.ReplaceAll(b, []byte("e2.data"), []byte("d2.data"))
			if len(a) != len(b) {
				t.Fatalf("file sizes differ: qemu-img %d, qimg %d", len(a), len(b))
			}
			for i := range a {
				if a[i] != b[i] {
					t.Fatalf("files differ at byte %#x: qemu-img %#x, qimg %#x", i, a[i], b[i])
				}
			}
			if out := qemutest.Run(t, "qemu-img", "check", got); !strings.Contains(out, "No errors were found") {
				t.Fatalf("qemu-img check: %s", out)
			}
		})
	}
}

func TestCreateErrors(t *testing.T) {
	cases := map[string]string{
		"compat=x":                                "Parameter 'version' does not accept value 'x'",
		"cluster_size=1000":                       "Cluster size must be a power of two between 512 and 2048k",
		"cluster_size=4M":                         "Cluster size must be a power of two between 512 and 2048k",
		"refcount_bits=3":                         "Refcount width must be a power of two and may not exceed 64 bits",
		"compression_type=lz4":                    "Parameter 'compression-type' does not accept value 'lz4'",
		"extended_l2=on,cluster_size=4k":          "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
		"extended_l2=on,compat=0.10":              "Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)",
		"compat=0.10,refcount_bits=8":             "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)",
		"compat=0.10,lazy_refcounts=on":           "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)",
		"data_file_raw=on":                        "data-file-raw requires data-file",
		"preallocation=foo":                       "Parameter 'preallocation' does not accept value 'foo'",
		"encrypt.format=aes,encrypt.iter-time=10": "Parameter 'encrypt.iter-time' is unexpected",
		"encrypt.key-secret=s0":                   "Parameter 'encrypt.format' is missing",
		"encrypt.format=foo":                      "Parameter 'format' does not accept value 'foo'",
		"compat=0.10,compression_type=zstd":       "Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)",
	}
	for opts, want := range cases {
		o, err := image.ParseOptions(opts)
		if err != nil {
			t.Fatal(err)
		}
		_, err = parseCreateOptions(o)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", opts, err, want)
		}
	}
}

func TestFormattingLine(t *testing.T) {
	cases := map[string]string{
		"": "fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=10485760 lazy_refcounts=off refcount_bits=16",
		"preallocation=off,compat=1.1,data_file=e.data,backing_file=a.qcow2,backing_fmt=qcow2,cluster_size=4k": "fmt=qcow2 cluster_size=4096 extended_l2=off preallocation=off compression_type=zlib size=10485760 compat=1.1 backing_file=a.qcow2 backing_fmt=qcow2 data_file=e.data lazy_refcounts=off refcount_bits=16",
	}
	for opts, want := range cases {
		o, err := image.ParseOptions(opts)
		if err != nil {
			t.Fatal(err)
		}
		p, err := create.Prepare(create.Request{Filename: filepath.Join(t.TempDir(), "x.qcow2"), Format: "qcow2", Size: 10 << 20, Options: o, NoOpenBacking: true})
		if err != nil {
			t.Fatal(err)
		}
		if p.Summary != want {
			t.Errorf("got  %s\nwant %s", p.Summary, want)
		}
	}
}
