package vhdx

import (
	"bytes"
	"errors"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	_ "qimg/formats/file"
	"qimg/image"
	"qimg/internal/qemutest"
)

// qemuImage makes a VHDX image with qemu-img create and qemu-io commands.
func qemuImage(t testing.TB, size string, opts string, ioCmds ...string) string {
	t.Helper()
	qemutest.Need(t, "qemu-img", "qemu-io")
	img := filepath.Join(t.TempDir(), "img.vhdx")
	args := []string{"create", "-q", "-f", "vhdx"}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	qemutest.Run(t, "qemu-img", append(args, img, size)...)
	if len(ioCmds) > 0 {
		io := []string{"-f", "vhdx"}
		for _, c := range ioCmds {
			io = append(io, "-c", c)
		}
		qemutest.Run(t, "qemu-io", append(io, img)...)
	}
	return img
}

// withPendingLog makes the log of an image qemu wrote to look not yet
// replayed: qemu leaves its log entries in place and clears the headers'
// log GUID after replaying them, so setting it back to the entries' GUID
// (in both headers, checksums updated) revives them.
func withPendingLog(t testing.TB, img string) {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := selectHeader(&sparseFile{pieces: []piece{{off: 0, data: b}}, size: int64(len(b))}, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	entry := b[h.logOffset:]
	if string(entry[:4]) != "loge" {
		t.Fatalf("no log entry at %#x", h.logOffset)
	}
	for _, off := range []int{header1Offset, header2Offset} {
		hd := b[off : off+headerSize]
		copy(hd[48:64], entry[32:48])
		clear(hd[4:8])
		le.PutUint32(hd[4:], crc32.Checksum(hd, castagnoli))
	}
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// openImage opens img read-only as qimg's commands do.
func openImage(img string) (*image.Node, error) {
	return image.Open(img, image.OpenOptions{Format: "vhdx", Claim: image.ClaimRead, NoBacking: true})
}

// A read-only open of an image with a log to replay fails with
// qemu-img's words; the image is left as it was.
func TestPendingLogRefused(t *testing.T) {
	img := qemuImage(t, "64M", "", "write -P 0x11 0 1M")
	withPendingLog(t, img)
	before, _ := os.ReadFile(img)
	out, err := exec.Command("qemu-img", "info", img).CombinedOutput()
	if err == nil {
		t.Fatalf("qemu-img info opened the image:\n%s", out)
	}
	want := strings.SplitN(strings.TrimPrefix(string(out), "qemu-img: Could not open '"+img+"': "), "\n", 2)[0]
	_, err = openImage(img)
	if err == nil {
		t.Fatal("qimg opened the image")
	}
	if got := strings.SplitN(err.Error(), "\n", 2)[0]; got != want {
		t.Errorf("error %q, qemu-img says %q", got, want)
	}
	if !errors.Is(err, syscall.EPERM) {
		t.Errorf("error %v is not EPERM", err)
	}
	after, _ := os.ReadFile(img)
	if string(before) != string(after) {
		t.Error("the image changed")
	}
}

// TestWriteSeeds regenerates the fuzz seeds in testdata/vhdx from images
// qemu-img makes; it runs only with QIMG_VHDX_SEEDS=1 (all of them) or
// QIMG_VHDX_SEEDS=NAME.seed (that one).
func TestWriteSeeds(t *testing.T) {
	only := os.Getenv("QIMG_VHDX_SEEDS")
	if only == "" {
		t.Skip("set QIMG_VHDX_SEEDS=1 to regenerate the seeds")
	}
	seeds := map[string]string{
		"dynamic.seed": qemuImage(t, "32M", ""),
		"fixed.seed":   qemuImage(t, "3M", "subformat=fixed"),
		"blocks1m.seed": qemuImage(t, "5G", "block_size=1M,log_size=2M",
			"write -P 0x33 4095M 4k", "write -P 0x34 4097M 4k"),
	}
	logImg := qemuImage(t, "16M", "block_size=1M", "write -P 0x44 1M 4k")
	withPendingLog(t, logImg)
	seeds["log.seed"] = logImg
	seeds["logrun.seed"] = logRunImage(t)
	for name, img := range seeds {
		if only != "1" && only != name {
			continue
		}
		dir := filepath.Join("..", "..", "testdata", "vhdx")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), encodeSparseFile(t, img), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// qimg's BAT updates go through the log: an entry qimg wrote, made
// pending again, is one QEMU replays (check -r all counts it as a fixed
// corruption) and the image then reads as written; before the replay qimg
// refuses it read-only in qemu-img's words, and replays it read/write as
// qemu-img does.
func TestQimgLogEntryReplayedByQemu(t *testing.T) {
	img := qemuImage(t, "64M", "block_size=1M")
	n, err := image.Open(img, image.OpenOptions{Format: "vhdx", Claim: image.ClaimWrite, Writable: true, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0x5a}, 4096)
	if _, err := n.WriteAt(data, 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	withPendingLog(t, img)
	if _, err := openImage(img); err == nil || !strings.Contains(err.Error(), "contains a log that needs to be replayed") {
		t.Fatalf("read-only open: %v", err)
	}
	replayBoth(t, img)
	out := qemutest.Run(t, "qemu-img", "check", "-r", "all", img)
	if !strings.Contains(out, "1 corruptions") {
		t.Fatalf("qemu-img check -r all did not replay the log:\n%s", out)
	}
	qemutest.Run(t, "qemu-img", "check", img)
	out = qemutest.Run(t, "qemu-io", "-f", "vhdx", "-r", "-c", "read -P 0x5a 3M 4k", "-c", "read -P 0 0 3M", img)
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("data after replay:\n%s", out)
	}
}
