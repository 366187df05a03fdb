package qcow2

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

// TestLUKSInfo: a LUKS-encrypted qcow2 opens for info without its key,
// and info shows the encryption as qemu-img info does; data commands ask
// for the key in qemu's words.
func TestLUKSInfo(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	path := filepath.Join(t.TempDir(), "e.qcow2")
	args := []string{"create", "-q", "-f", "qcow2", "--object", "secret,id=s,data=pw",
		"-o", "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv", path, "1M"}
	var out []byte
	var err error
	// qemu-img 7.2's PBKDF2 timing fails now and then on a fast run
	for try := 0; try < 20; try++ {
		if out, err = exec.Command("qemu-img", args...).CombinedOutput(); err == nil || !strings.Contains(string(out), "accurate CPU usage") {
			break
		}
	}
	if err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
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
		t.Fatalf("info\n%s\nqemu-img info\n%s", got.String(), want)
	}
	if _, err := image.Open(path, image.OpenOptions{Claim: image.ClaimRead}); err == nil ||
		err.Error() != "Parameter 'encrypt.key-secret' is required for cipher" {
		t.Fatalf("open for reading: %v", err)
	}
	if _, err := image.Open(path, image.OpenOptions{Claim: image.ClaimRead, Check: true}); err == nil ||
		err.Error() != "Parameter 'encrypt.key-secret' is required for cipher" {
		t.Fatalf("open for check: %v", err)
	}
	testLUKSRead(t, path)
	testEncryptedWrite(t, path)
}

// TestAESWrite: qimg writes legacy AES-encrypted images (the IV the
// guest sector) that qemu reads as qimg wrote them, with every cluster
// layout the writes go through: new clusters, allocated ones, subclusters,
// preallocated ones.
func TestAESWrite(t *testing.T) {
	qemutest.Need(t, "qemu-img")
	for _, opts := range []string{"", ",compat=0.10", ",extended_l2=on", ",preallocation=metadata", ",extended_l2=on,preallocation=metadata"} {
		t.Run(strings.NewReplacer(",", "_", "=", "-").Replace(opts), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "aes.qcow2")
			qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s,data=pw",
				"-o", "encrypt.format=aes,encrypt.key-secret=s"+opts, path, "1M")
			qemutest.Run(t, "qemu-io", "--object", "secret,id=s,data=pw", "--image-opts",
				"driver=qcow2,encrypt.key-secret=s,file.filename="+path, "-c", "write -P 0x11 0 4k", "-c", "write -P 0x22 66000 1000")
			testEncryptedWrite(t, path)
		})
	}
}

// testEncryptedWrite writes through qimg, aligned and not, into new and
// allocated clusters; qemu reads it back and checks the image clean.
func testEncryptedWrite(t *testing.T, path string) {
	secret := "--object=secret,id=s,data=pw"
	opts := "driver=qcow2,encrypt.key-secret=s,file.filename=" + path
	raw := filepath.Join(t.TempDir(), "before.raw")
	qemutest.Run(t, "qemu-img", "convert", secret, "--image-opts", "-O", "raw", opts, raw)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	objs := &image.Objects{}
	if err := objs.ParseObject("secret,id=s,data=pw"); err != nil {
		t.Fatal(err)
	}
	n, err := image.Open(path, image.OpenOptions{Writable: true, Claim: image.ClaimWrite, Objects: objs,
		DriverOptions: map[string]string{"encrypt.key-secret": "s"}})
	if err != nil {
		t.Fatal(err)
	}
	write := func(off int64, p []byte) {
		t.Helper()
		if _, err := n.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	write(100, bytes.Repeat([]byte{0x61}, 300))         // allocated cluster, inside a sector
	write(64<<10-7, bytes.Repeat([]byte{0x62}, 10))     // over a cluster boundary
	write(200<<10+5, bytes.Repeat([]byte{0x63}, 70000)) // new clusters, unaligned
	write(768<<10, bytes.Repeat([]byte{0x64}, 128<<10)) // new clusters, aligned
	if err := n.WriteZeroes(300<<10+1, 1000, false); err != nil {
		t.Fatal(err)
	}
	clear(want[300<<10+1 : 300<<10+1001])
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	qemutest.Run(t, "qemu-img", "check", secret, "--image-opts", opts)
	after := filepath.Join(t.TempDir(), "after.raw")
	qemutest.Run(t, "qemu-img", "convert", secret, "--image-opts", "-O", "raw", opts, after)
	got, err := os.ReadFile(after)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("qemu reads other data than qimg wrote")
	}
}

// testLUKSRead reads what qemu-io wrote into an encrypted image, with the
// key, as qemu reads it; a wrong passphrase gets qemu's words.
func testLUKSRead(t *testing.T, path string) {
	qemutest.Need(t, "qemu-io")
	secret := "--object=secret,id=s,data=pw"
	opts := "driver=qcow2,encrypt.key-secret=s,file.filename=" + path
	qemutest.Run(t, "qemu-io", secret, "--image-opts", opts, "-c", "write -P 0x11 0 4k",
		"-c", "write -P 0x22 1000 3000", "-c", "write -P 0x33 65000 70000", "-c", "write -z 512k 64k")
	raw := filepath.Join(t.TempDir(), "out.raw")
	qemutest.Run(t, "qemu-img", "convert", secret, "--image-opts", "-O", "raw", opts, raw)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	objs := &image.Objects{}
	if err := objs.ParseObject("secret,id=s,data=pw"); err != nil {
		t.Fatal(err)
	}
	keyed := image.OpenOptions{Claim: image.ClaimRead, Objects: objs, DriverOptions: map[string]string{"encrypt.key-secret": "s"}}
	n, err := image.Open(path, keyed)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	got := make([]byte, n.Size())
	if _, err := n.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("qimg reads other data than qemu")
	}
	for off := int64(0); off < n.Size(); {
		e, err := n.BlockStatus(off, n.Size()-off)
		if err != nil || e.HostOffset != -1 {
			t.Fatalf("block status at %d: %+v, %v: an encrypted run has no host offset", off, e, err)
		}
		off = e.End()
	}
	part := make([]byte, 3001)
	if _, err := n.ReadAt(part, 64999); err != nil || !bytes.Equal(part, want[64999:68000]) {
		t.Fatalf("unaligned read: %v", err)
	}
	wrong := &image.Objects{}
	if err := wrong.ParseObject("secret,id=s,data=nope"); err != nil {
		t.Fatal(err)
	}
	keyed.Objects = wrong
	if _, err := image.Open(path, keyed); err == nil || err.Error() != "Invalid password, cannot unlock any keyslot" {
		t.Fatalf("wrong passphrase: %v", err)
	}
}
