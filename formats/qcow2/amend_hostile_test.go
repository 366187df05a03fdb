package qcow2

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qimg/image"
)

// TestAmendRefcountTableNamingOneBlockTwice: a refcount table whose
// entries all name one block would make the walks of a width change read
// that block once per entry; amend refuses it before any walk.
func TestAmendRefcountTableNamingOneBlockTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img.qcow2")
	createImage(t, path, "", 64<<20)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	table := int(get64(b, offRefcountTableOffset))
	for i := 1; i < 8192; i++ {
		put64(b, table+i*8, get64(b, table))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := image.Open(path, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	o, _ := image.ParseOptions("refcount_bits=4")
	err = n.Driver().(*Image).Amend(o, nil)
	if err == nil || !strings.Contains(err.Error(), "name the same block") {
		t.Fatalf("amend: %v, want a refusal naming the shared block", err)
	}
	after, _ := os.ReadFile(path)
	if string(after) != string(b) {
		t.Fatal("the refused amend changed the file")
	}
}
