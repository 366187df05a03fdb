package commit

import (
	"path/filepath"
	"testing"

	"qimg/image"
	"qimg/internal/qemutest"
)

// TestFindBase: -b names an image of the chain by its stored backing
// name, by the name it was opened by, or by any path to the same file;
// never the top itself.
func TestFindBase(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "l0.qcow2"), "1M")
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "l0.qcow2", "-F", "qcow2", filepath.Join(dir, "l1.qcow2"))
	qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "l1.qcow2", "-F", "qcow2", filepath.Join(dir, "l2.qcow2"))
	top, err := image.Open(filepath.Join(dir, "l2.qcow2"), image.OpenOptions{Claim: TopClaim})
	if err != nil {
		t.Fatal(err)
	}
	defer top.Close()
	chain := top.Chain()
	for _, c := range []struct {
		name string
		want int
	}{
		{"l1.qcow2", 1},
		{"l0.qcow2", 2},
		{filepath.Join(dir, "l0.qcow2"), 2},
		{dir + "/../" + filepath.Base(dir) + "/l1.qcow2", 1},
		{"./l0.qcow2", 2},
		{"l2.qcow2", -1},
		{"nothere.qcow2", -1},
		{"", -1},
	} {
		if got := FindBase(chain, c.name); got != c.want {
			t.Errorf("FindBase(%q) = %d, want %d", c.name, got, c.want)
		}
	}
}
