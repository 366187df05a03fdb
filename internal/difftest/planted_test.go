package difftest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qimg/internal/qemutest"
)

// TestPlantedDivergence runs the harness against a stand-in for qimg that
// is qemu-img except that snapshot -c does nothing: the divergence must be
// found at that step, by its snapshot count, and shrunk to the create and
// the snapshot step.
func TestPlantedDivergence(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	fake := filepath.Join(t.TempDir(), "fake-qimg")
	body := "#!/bin/sh\n[ \"$1\" = snapshot ] && [ \"$3\" = -c ] && exit 0\nexec qemu-img \"$@\"\n"
	if err := os.WriteFile(fake, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	r := &replayer{qimg: fake, root: t.TempDir(), reads: map[string]bool{}}
	io := func(cmd string) step {
		return step{kind: "write", args: []string{"qemu-io", "-f", "qcow2", "-c", cmd, "a.qcow2"}, writes: []string{"a.qcow2"}}
	}
	steps := []step{
		{kind: "create-qcow2", tool: true, args: []string{"create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,lazy_refcounts=on", "a.qcow2", "1M"},
			makes: &made{"a.qcow2", "qcow2"}, writes: []string{"a.qcow2"}},
		io("write -P 0x11 0 64k"),
		io("write -z 4k 8k"),
		{kind: "snapshot-create", tool: true, args: []string{"snapshot", "-q", "-c", "s1", "a.qcow2"}, writes: []string{"a.qcow2"}},
		io("discard 0 4k"),
	}
	d, err := r.replay(steps, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d == nil || d.step != 3 || d.aspect != "info:snapshots.count" {
		t.Fatalf("divergence %v, want one at step 4 in info:snapshots.count", d)
	}
	small, err := r.shrink(steps[:d.step+1], d.signature())
	if err == nil {
		small, err = r.simplify(small, d.signature())
	}
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range small {
		got = append(got, strings.Join(s.args, " "))
	}
	want := []string{"create -q -f qcow2 a.qcow2 1M", "snapshot -q -c s1 a.qcow2"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("shrunk to\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if sh := script("planted", small, d); !strings.Contains(sh, `"$tool" snapshot -q -c s1 a.qcow2`) || !strings.Contains(sh, "qemu-img info") {
		t.Errorf("script does not run the steps and show the difference:\n%s", sh)
	}
}
