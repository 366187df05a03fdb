package file

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// lockedBytes lists the bytes of path locked by any open file description,
// from /proc/locks (OFD locks show pid -1 there, so they are told apart by
// the file's device and inode).
func lockedBytes(t *testing.T, path string) []int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	f, err := os.Open("/proc/locks")
	if err != nil {
		t.Skipf("no /proc/locks: %v", err)
	}
	defer f.Close()
	var bytes []int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[1] == "->" || fields[5] != id {
			continue
		}
		start, err1 := strconv.ParseInt(fields[6], 10, 64)
		end, err2 := strconv.ParseInt(fields[7], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("unexpected /proc/locks line %q", sc.Text())
		}
		for b := start; b <= end; b++ {
			bytes = append(bytes, b)
		}
	}
	slices.Sort(bytes)
	return slices.Compact(bytes)
}

// needQemu skips the test when tool is not installed, unless
// QIMG_REQUIRE_QEMU=1 asks for a failure instead.
func needQemu(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("QIMG_REQUIRE_QEMU") == "1" {
			t.Fatalf("%s is required (QIMG_REQUIRE_QEMU=1): %v", tool, err)
		}
		t.Skipf("%s not installed", tool)
	}
	return p
}
