package luks

import (
	"path/filepath"
	"strings"
	"testing"

	"qimg/image"
)

// TestAmendOutsideRegion: a header whose key material lies past its
// region (a qcow2 crypto header extension shorter than the LUKS header
// says) is refused before anything is written.
func TestAmendOutsideRegion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.luks")
	qimgCreate(t, path, "", 1<<20)
	before := fileSum(t, path)
	n, err := openLUKS(t, path, testPassword, true)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	img := n.Driver().(*Image)
	k := img.keys
	k.r.limit = 3 * keySlotOffset // the header and a part of slot 0's material
	write := func(b []byte, off int64) error {
		_, err := img.file.WriteAt(b, off)
		return err
	}
	for _, opts := range []string{"state=inactive,keyslot=0", "state=active,new-secret=s,keyslot=3,iter-time=10"} {
		o, err := image.ParseOptions(opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := k.amend(write, o, "", true); err == nil || !strings.Contains(err.Error(), "outside of extension header") {
			t.Errorf("%s: got %v, want a refusal", opts, err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, path) != before {
		t.Error("a refused amend changed the image")
	}
}
