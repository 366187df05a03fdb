package qcow2

import (
	"bytes"
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
	n, err := image.Open(path, image.OpenOptions{Claim: image.ClaimInfo})
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
}
