package qcow2

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"qimg/image"
	"qimg/internal/qemutest"
)

// TestAmendAgainstQemu amends random images (cluster sizes, versions,
// refcount widths, overlays, data, zeroes, discards, compressed clusters,
// snapshots) with random option sets (sizes among them, with and without
// a version change), each step from twin files: qemu-img
// amend on one, qimg's Amend on the other. Both must accept or refuse
// alike (qimg refusing with qemu's words and changing nothing); after a
// success both must show the same guest data, snapshots and info, and
// qimg's image must check clean. QIMG_AMEND_DIFF_ROUNDS and
// QIMG_AMEND_DIFF_SEED run it longer or again.
func TestAmendAgainstQemu(t *testing.T) {
	qemutest.Need(t, "qemu-img", "qemu-io")
	if testing.Short() {
		t.Skip("short")
	}
	rounds := 4
	if n, err := strconv.Atoi(os.Getenv("QIMG_AMEND_DIFF_ROUNDS")); err == nil {
		rounds = n
	}
	seed := time.Now().UnixNano()
	if n, err := strconv.ParseInt(os.Getenv("QIMG_AMEND_DIFF_SEED"), 10, 64); err == nil {
		seed = n
	}
	t.Logf("QIMG_AMEND_DIFF_SEED=%d", seed)
	rng := rand.New(rand.NewSource(seed))
	for round := range rounds {
		amendDiffRound(t, rng, round)
	}
}

// amendWidths are the refcount widths tried for a cluster size: qemu-img
// walks every refcount a table could describe, which takes it seconds for
// narrow widths with large clusters.
var amendWidths = map[int][]int{512: {1, 2, 4, 8, 16, 32, 64}, 4096: {1, 2, 4, 8, 16, 32, 64}, 16384: {8, 16, 32, 64}}

func amendDiffRound(t *testing.T, rng *rand.Rand, round int) {
	dir := t.TempDir()
	pick := func(n int) int { return rng.Intn(n) }
	cs := []int{512, 4096, 16384}[pick(3)]
	size := []int64{1 << 20, 4 << 20, 16 << 20}[pick(3)]
	widths := amendWidths[cs]
	a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
	opts := fmt.Sprintf("cluster_size=%d", cs)
	if pick(3) == 0 {
		opts += ",compat=0.10"
	} else {
		opts += fmt.Sprintf(",refcount_bits=%d", widths[pick(len(widths))])
	}
	args := []string{"create", "-q", "-f", "qcow2", "-o", opts}
	if pick(2) == 0 {
		base := filepath.Join(dir, "base.qcow2")
		qemutest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, strconv.FormatInt(size, 10))
		qemutest.Run(t, "qemu-io", "-c", fmt.Sprintf("write -P 9 0 %d", size), base)
		args = append(args, "-b", "base.qcow2", "-F", "qcow2")
	}
	qemutest.Run(t, "qemu-img", append(args, a, strconv.FormatInt(size, 10))...)
	story := []string{"create " + strings.Join(args[3:], " ")}
	var snaps []string
	for range 3 + pick(6) {
		off := int64(pick(int(size/512))) * 512
		n := min(size-off, int64(1+pick(64))*int64(cs)/2)
		n -= n % 512
		if n == 0 {
			continue
		}
		cmd := []string{
			fmt.Sprintf("write -P %d %d %d", 1+pick(200), off, n),
			fmt.Sprintf("write -z %d %d", off, n),
			fmt.Sprintf("write -z -u %d %d", off, n),
			fmt.Sprintf("discard %d %d", off, n),
			fmt.Sprintf("write -c -P %d %d %d", 1+pick(200), off-off%int64(cs), min(int64(cs), size-off+off%int64(cs))),
			"snapshot",
		}[pick(6)]
		if cmd == "snapshot" {
			// refused where narrow refcounts cannot count the references
			name := fmt.Sprintf("s%d", len(snaps))
			if exec.Command("qemu-img", "snapshot", "-c", name, a).Run() != nil {
				story = append(story, "snapshot refused (leaks left)")
				continue
			}
			snaps = append(snaps, name)
		} else if exec.Command("qemu-io", "-c", cmd, a).Run() != nil {
			// compressed writes onto allocated clusters fail
			cmd += " (refused)"
		}
		story = append(story, cmd)
	}
	choices := []string{"compat=0.10", "compat=1.1", "lazy_refcounts=on", "lazy_refcounts=off",
		"compat=0.10,refcount_bits=16", "compat=1.1,lazy_refcounts=on",
		fmt.Sprintf("size=%d", 2*size), fmt.Sprintf("compat=0.10,size=%d", 2*size), fmt.Sprintf("compat=1.1,size=%d", size+512)}
	for _, w := range widths {
		choices = append(choices, fmt.Sprintf("refcount_bits=%d", w), fmt.Sprintf("compat=1.1,refcount_bits=%d", w))
	}
	for range 1 + pick(3) {
		o := choices[pick(len(choices))]
		story = append(story, "amend -o "+o)
		when := fmt.Sprintf("round %d: %s", round, strings.Join(story, "; "))
		copyFile(t, a, b)
		amendDiffStep(t, a, b, o, snaps, when)
	}
}

// amendDiffStep amends b with qemu-img and a with qimg, and compares.
func amendDiffStep(t *testing.T, a, b, o string, snaps []string, when string) {
	before := fileSum(t, a)
	leaksBefore := qemutest.CheckNoCorruption(t, a, when+" (before)")
	var stderr bytes.Buffer
	cmd := exec.Command("qemu-img", "amend", "-o", o, b)
	cmd.Stderr = &stderr
	qemuErr := cmd.Run()
	err := qimgAmend(a, o)
	want := strings.TrimSpace(strings.TrimPrefix(stderr.String(), "qemu-img: "))
	switch {
	case qemuErr != nil && err == nil:
		t.Fatalf("%s: qemu-img refused (%s), qimg did not", when, want)
	case qemuErr == nil && err != nil:
		t.Fatalf("%s: qimg refused (%v), qemu-img did not", when, err)
	case err != nil:
		// qemu's message may run on to a second line (a hint)
		if got := strings.ReplaceAll(err.Error(), ". You can use", "\nYou can use"); got != want {
			t.Fatalf("%s: qimg: %q, qemu-img: %q", when, got, want)
		}
		if fileSum(t, a) != before {
			t.Fatalf("%s: qimg's refused amend changed the image", when)
		}
		return
	}
	if leaks := qemutest.CheckNoCorruption(t, a, when); leaks > leaksBefore {
		t.Fatalf("%s: %d leaked clusters, %d before", when, leaks, leaksBefore)
	}
	if out := qemutest.Run(t, "qemu-img", "compare", a, b); !strings.Contains(out, "identical") {
		t.Fatalf("%s: guest data differs: %s", when, out)
	}
	if ia, ib := infoOf(t, a), infoOf(t, b); ia != ib {
		t.Fatalf("%s: info differs:\n%s\nqemu-img's:\n%s", when, ia, ib)
	}
	for _, s := range snaps {
		if !bytes.Equal(snapshotRaw(t, a, s), snapshotRaw(t, b, s)) {
			t.Fatalf("%s: snapshot %s differs", when, s)
		}
	}
}

// qimgAmend amends an image through qimg's driver.
func qimgAmend(path, opts string) error {
	o, err := image.ParseOptions(opts)
	if err != nil {
		return err
	}
	n, err := image.Open(path, image.OpenOptions{Format: "qcow2", Writable: true, Claim: image.ClaimWrite})
	if err != nil {
		return err
	}
	if err := n.Driver().(*Image).Amend(o, nil); err != nil {
		n.Close()
		return err
	}
	return n.Close()
}

var infoNoise = regexp.MustCompile(`(?m)^.*"(filename|actual-size|backing-filename|full-backing-filename)".*\n`)

// infoOf is qemu-img info --output=json without what names the file.
func infoOf(t testing.TB, img string) string {
	t.Helper()
	return infoNoise.ReplaceAllString(qemutest.Run(t, "qemu-img", "info", "--output=json", img), "")
}

func snapshotRaw(t testing.TB, img, snap string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "snap.raw")
	qemutest.Run(t, "qemu-img", "convert", "-l", snap, "-O", "raw", img, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
