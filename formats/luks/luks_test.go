package luks

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"qimg/create"
	"qimg/image"
	"qimg/internal/drivertest"
	"qimg/internal/qemutest"
)

const testPassword = "s3cr3t pass"

func testObjects(t testing.TB, pw string) *image.Objects {
	t.Helper()
	objs := &image.Objects{}
	if err := objs.ParseObject("secret,id=s,data=" + pw); err != nil {
		t.Fatal(err)
	}
	return objs
}

// qemuIO runs qemu-io commands on a LUKS image, with its key.
func qemuIO(t *testing.T, path string, cmds ...string) {
	t.Helper()
	args := []string{"--object", "secret,id=s,data=" + testPassword, "--image-opts", "driver=luks,key-secret=s,file.filename=" + path}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := qemutest.Run(t, "qemu-io", args...)
	if strings.Contains(out, "failed") {
		t.Fatalf("qemu-io: %s", out)
	}
}

// qemuRaw is the image's guest data as qemu reads it.
func qemuRaw(t *testing.T, path string) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "out.raw")
	qemutest.Run(t, "qemu-img", "convert", "--object", "secret,id=s,data="+testPassword, "--image-opts", "-O", "raw",
		"driver=luks,key-secret=s,file.filename="+path, raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openLUKS(t testing.TB, path, pw string, writable bool) (*image.Node, error) {
	claim := image.ClaimRead
	if writable {
		claim = image.ClaimWrite
	}
	return image.Open(path, image.OpenOptions{Format: "luks", Writable: writable, Claim: claim,
		Objects: testObjects(t, pw), DriverOptions: map[string]string{"key-secret": "s"}})
}

// qemuImages are testdata/luks's images, made and written by qemu (see
// its README), one per cipher mode, IV generator and hash family.
var qemuImages = []string{"aes-256-xts-plain64", "aes-128-cbc-essiv", "aes-256-ecb-sha1",
	"aes-128-ctr-plain-sha512", "twofish-256-xts-plain", "cast5-128-cbc-plain64-md5", "serpent-128-cbc-essiv"}

// TestReadQemuImages reads images qemu-img made and qemu-io wrote, in
// every cipher mode and IV generator: the patterns qemu-io wrote, and
// (with qemu installed) every byte as qemu reads it.
func TestReadQemuImages(t *testing.T) {
	for _, name := range qemuImages {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "q.luks")
			if err := os.WriteFile(path, drivertest.Seed(t, "luks", name+".luks"), 0o644); err != nil {
				t.Fatal(err)
			}
			n, err := openLUKS(t, path, testPassword, false)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			got := make([]byte, n.Size())
			if _, err := n.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			want := append(append(bytes.Repeat([]byte{0x11}, 1000), bytes.Repeat([]byte{0x22}, 3000)...), bytes.Repeat([]byte{0x11}, 96)...)
			if n.Size() != 64<<10 || !bytes.Equal(got[:4096], want) || !bytes.Equal(got[8<<10:60<<10], make([]byte, 52<<10)) ||
				!bytes.Equal(got[60<<10:], bytes.Repeat([]byte{0x33}, 4096)) {
				t.Fatal("qimg does not read what qemu-io wrote")
			}
			part := make([]byte, 3001)
			if _, err := n.ReadAt(part, 999); err != nil || !bytes.Equal(part, got[999:4000]) {
				t.Fatalf("unaligned read: %v", err)
			}
			if qemutest.Have("qemu-img") && !bytes.Equal(got, qemuRaw(t, path)) {
				t.Fatal("qimg reads other data than qemu")
			}
		})
	}
}

var qimgVariants = []struct{ name, opts string }{
	{"aes-256-xts-plain64", ""},
	{"aes-128-cbc-essiv", ",cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv"},
	{"aes-256-ecb-sha1", ",cipher-mode=ecb,hash-alg=sha1"},
	{"aes-128-ctr-plain", ",cipher-alg=aes-128,cipher-mode=ctr,ivgen-alg=plain,hash-alg=sha512"},
	{"twofish-256-xts-plain", ",cipher-alg=twofish-256,ivgen-alg=plain"},
	{"cast5-128-cbc-plain64-md5", ",cipher-alg=cast5-128,cipher-mode=cbc,hash-alg=md5"},
	{"aes-256-xts-essiv", ",ivgen-alg=essiv"},
	{"twofish-128-xts-essiv-sha1", ",cipher-alg=twofish-128,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1"},
	{"serpent-256-xts-plain64", ",cipher-alg=serpent-256"},
	{"serpent-192-xts-essiv", ",cipher-alg=serpent-192,ivgen-alg=essiv"},
	{"serpent-128-cbc-essiv", ",cipher-alg=serpent-128,cipher-mode=cbc,ivgen-alg=essiv"},
	{"serpent-256-ecb", ",cipher-alg=serpent-256,cipher-mode=ecb"},
	{"serpent-256-ctr-plain", ",cipher-alg=serpent-256,cipher-mode=ctr,ivgen-alg=plain"},
}

// qemuMadeCiphers are cipher options qemu-img 7.2 creates images with
// and TestReadQemuMade reads: Serpent in each key size, in the modes and
// IV generators that its seed (cbc-essiv) does not cover (serpent-192
// only in XTS: qemu aborts on its key material elsewhere; ECB is the
// same code for every cipher), and XTS with ESSIV. Each qemu-img create
// costs seconds of PBKDF2 timing, so the list stays short.
var qemuMadeCiphers = []string{
	"cipher-alg=serpent-128,cipher-mode=xts,ivgen-alg=plain",
	"cipher-alg=serpent-192,cipher-mode=xts,ivgen-alg=essiv",
	"cipher-alg=serpent-256,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256",
	"cipher-alg=serpent-256,cipher-mode=ctr,ivgen-alg=plain64",
	"cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=essiv",
}

// TestReadQemuMade: what qemu-img writes into images of these ciphers,
// qimg reads back byte for byte.
func TestReadQemuMade(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "in.raw")
	want := make([]byte, 200<<10)
	rand.Read(want)
	if err := os.WriteFile(raw, want, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, opts := range qemuMadeCiphers {
		t.Run(strings.NewReplacer(",", "_", "=", "-").Replace(opts), func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("%d.luks", i))
			qemuCreate(t, "convert", "-O", "luks", "-o", "key-secret=s,iter-time=10,"+opts, raw, path)
			n, err := openLUKS(t, path, testPassword, false)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			got := make([]byte, n.Size())
			if _, err := n.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("qimg reads other data than qemu-img wrote")
			}
		})
	}
}

// qemuCreate runs a qemu-img command that makes a LUKS image with the
// test secret s, again when qemu-img 7.2's PBKDF2 timing fails.
func qemuCreate(t *testing.T, args ...string) {
	t.Helper()
	args = append([]string{args[0], "--object", "secret,id=s,data=" + testPassword}, args[1:]...)
	for try := 0; ; try++ {
		out, err := exec.Command("qemu-img", args...).CombinedOutput()
		if err == nil {
			return
		}
		if !strings.Contains(string(out), "accurate CPU usage") || try == 20 {
			t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// qimgCreate makes a LUKS image with qimg's create.
func qimgCreate(t *testing.T, path, opts string, size int64) {
	t.Helper()
	o, err := image.ParseOptions("key-secret=s,iter-time=10" + opts)
	if err != nil {
		t.Fatal(err)
	}
	image.UseObjects(testObjects(t, testPassword))
	defer image.UseObjects(nil)
	p, err := create.Prepare(create.Request{Filename: path, Format: "luks", Size: size, Options: o})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(); err != nil {
		t.Fatal(err)
	}
}

// TestWriteReadByQemu writes through qimg, aligned and not, and resizes;
// qemu reads the same data.
func TestWriteReadByQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	for _, v := range qimgVariants {
		t.Run(v.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "w.luks")
			qimgCreate(t, path, v.opts, 1<<20)
			n, err := openLUKS(t, path, testPassword, true)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 2<<20)
			write := func(off int64, p []byte) {
				if _, err := n.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				copy(want[off:], p)
			}
			if err := n.WriteZeroes(0, 1<<20, false); err != nil {
				t.Fatal(err)
			}
			write(0, bytes.Repeat([]byte{0x11}, 4096))
			write(1000, bytes.Repeat([]byte{0x22}, 3000))
			write(600<<10, bytes.Repeat([]byte{0x44}, 300<<10)) // split over the cores
			if err := n.Truncate(2<<20, image.PreallocOff); err != nil {
				t.Fatal(err)
			}
			write(1<<20, bytes.Repeat([]byte{0x55}, 1<<20))
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			if got := qemuRaw(t, path); !bytes.Equal(got, want) {
				t.Fatalf("qemu reads other data than qimg wrote (%d bytes, want %d)", len(got), len(want))
			}
		})
	}
}

// TestWrongPassword: qemu's words, and the image is left as it was.
func TestWrongPassword(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.luks")
	qimgCreate(t, path, ",cipher-alg=aes-128", 64<<10)
	before := fileSum(t, path)
	_, err := openLUKS(t, path, "wrong", true)
	if err == nil || err.Error() != "Invalid password, cannot unlock any keyslot" {
		t.Fatalf("open with a wrong password: %v", err)
	}
	if _, err := image.Open(path, image.OpenOptions{Format: "luks", Claim: image.ClaimRead}); err == nil ||
		err.Error() != "Parameter 'key-secret' is required for cipher" {
		t.Fatalf("open without key-secret: %v", err)
	}
	if fileSum(t, path) != before {
		t.Fatal("a refused open changed the image")
	}
	n, err := image.Open(path, image.OpenOptions{Format: "luks", Claim: image.ClaimInfo, NoDataFile: true})
	if err != nil {
		t.Fatalf("info open without the key: %v", err)
	}
	n.Close()
}

func fileSum(t *testing.T, path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestInfoAsQemu: info --output=json of qemu's images, without the key,
// is qemu-img's byte for byte.
func TestInfoAsQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	for _, name := range qemuImages {
		path := filepath.Join(t.TempDir(), name+".luks")
		if err := os.WriteFile(path, drivertest.Seed(t, "luks", name+".luks"), 0o644); err != nil {
			t.Fatal(err)
		}
		want := qemutest.Run(t, "qemu-img", "info", "--output=json", path)
		n, err := image.Open(path, image.OpenOptions{Claim: image.ClaimInfo, NoDataFile: true})
		if err != nil {
			t.Fatal(err)
		}
		info, err := image.CollectInfo(n)
		n.Close()
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := image.WriteQJSON(&got, info); err != nil {
			t.Fatal(err)
		}
		if got.String() != want {
			t.Errorf("%s: info\n%s\nqemu-img info\n%s", name, got.String(), want)
		}
	}
}
