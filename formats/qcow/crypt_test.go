package qcow

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

// AES-encrypted qcow images against qemu: the header qemu-img create
// writes, data qemu-io wrote read by qimg, data qimg wrote read by
// qemu-img, and the same bytes from both with a wrong key (qcow's AES
// has no key check, so this compares the ciphers themselves).

const testSecret = "123456"

func qemuObjects(secret string) []string {
	return []string{"--object", "secret,id=sec0,data=" + secret}
}

func imageOpts(path string) string {
	return "driver=qcow,file.filename=" + path + ",encrypt.key-secret=sec0"
}

// qemuRaw is the guest data qemu-img reads with the given secret.
func qemuRaw(t *testing.T, path, secret string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.raw")
	args := append([]string{"convert"}, qemuObjects(secret)...)
	args = append(args, "--image-opts", imageOpts(path), "-O", "raw", out)
	qemutest.Run(t, "qemu-img", args...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openEncrypted(t *testing.T, path, secret string, writable bool) (*image.Node, error) {
	objs := &image.Objects{}
	objs.AddSecret("sec0", []byte(secret))
	claim := image.ClaimRead
	if writable {
		claim = image.ClaimWrite
	}
	return image.Open(path, image.OpenOptions{Format: "qcow", Claim: claim, Writable: writable,
		NoBacking: true, Objects: objs, DriverOptions: map[string]string{"encrypt.key-secret": "sec0"}})
}

func readAllNode(t *testing.T, n *image.Node) []byte {
	t.Helper()
	b := make([]byte, n.Size())
	for off := int64(0); off < n.Size(); off += 3000 {
		if _, err := n.ReadAt(b[off:min(off+3000, n.Size())], off); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestAESReadQemuImage(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	path := filepath.Join(t.TempDir(), "e.qcow")
	args := append([]string{"create", "-q", "-f", "qcow"}, qemuObjects(testSecret)...)
	qemutest.Run(t, "qemu-img", append(args, "-o", "encrypt.format=aes,encrypt.key-secret=sec0", path, "1M")...)
	io := append(qemuObjects(testSecret), "--image-opts", imageOpts(path),
		"-c", "write -P 5 0 64k", "-c", "write -P 6 70000 1000", "-c", "write -P 7 1040384 8192")
	if out, err := exec.Command("qemu-io", io...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v: %s", err, out)
	}
	for _, secret := range []string{testSecret, "wrong key"} {
		n, err := openEncrypted(t, path, secret, false)
		if err != nil {
			t.Fatal(err)
		}
		got := readAllNode(t, n)
		n.Close()
		if !bytes.Equal(got, qemuRaw(t, path, secret)) {
			t.Errorf("secret %q: qimg reads other data than qemu-img", secret)
		}
	}
	// without a key: info only
	n, err := image.Open(path, image.OpenOptions{Format: "qcow", Claim: image.ClaimRead, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ReadAt(make([]byte, 512), 0); err == nil || image.Strerror(err) != "Parameter 'encrypt.key-secret' is required for cipher" {
		t.Errorf("read without a key: %v", err)
	}
	n.Close()
}

func TestAESCreateAndWrite(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	dir := t.TempDir()
	want := filepath.Join(dir, "want.qcow")
	args := append([]string{"create", "-q", "-f", "qcow"}, qemuObjects(testSecret)...)
	qemutest.Run(t, "qemu-img", append(args, "-o", "encrypt.format=aes,encrypt.key-secret=sec0", want, "3M")...)
	got := filepath.Join(dir, "got.qcow")
	createEncrypted(t, got, 3<<20)
	a, _ := os.ReadFile(want)
	b, _ := os.ReadFile(got)
	if !bytes.Equal(a, b) {
		t.Fatalf("created file differs from qemu-img's")
	}

	n, err := openEncrypted(t, got, testSecret, true)
	if err != nil {
		t.Fatal(err)
	}
	guest := make([]byte, 3<<20)
	for _, w := range []struct {
		off, n int64
		b      byte
	}{{0, 4096, 1}, {5000, 100, 2}, {4096*3 + 7, 9000, 3}, {1 << 20, 64 << 10, 4}, {5000, 600, 5}} {
		p := bytes.Repeat([]byte{w.b}, int(w.n))
		if _, err := n.WriteAt(p, w.off); err != nil {
			t.Fatal(err)
		}
		copy(guest[w.off:], p)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(qemuRaw(t, got, testSecret), guest) {
		t.Errorf("qemu-img reads other data than qimg wrote")
	}
}

// createEncrypted makes an AES qcow image through the driver's Create,
// with the secret as --object would give it.
func createEncrypted(t *testing.T, path string, size int64) {
	t.Helper()
	file, err := image.CreateProtocolAs("", path, "create", image.ClaimCreate, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	o, err := image.ParseOptions("encrypt.format=aes,encrypt.key-secret=sec0")
	if err != nil {
		t.Fatal(err)
	}
	if err := checkCreate(o, size); err != nil {
		t.Fatal(err)
	}
	objs := &image.Objects{}
	objs.AddSecret("sec0", []byte(testSecret))
	if err := Create(&image.CreateContext{File: file, Filename: path, Size: size, Options: o, Objects: objs}); err != nil {
		t.Fatal(err)
	}
}
