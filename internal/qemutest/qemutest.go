// Package qemutest holds what the tests that compare qimg with the real
// qemu-img, qemu-io and qemu-nbd share: finding the tools and reading the
// lock bytes that processes hold on a file.
package qemutest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Required reports whether a missing tool must fail the test rather than
// skip it (QIMG_REQUIRE_QEMU=1, as CI sets).
func Required() bool { return os.Getenv("QIMG_REQUIRE_QEMU") == "1" }

// Need skips the test when one of tools is not installed, or fails it when
// Required. It returns the path of the first tool.
func Need(t testing.TB, tools ...string) string {
	t.Helper()
	first := ""
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			if Required() {
				t.Fatalf("%s is required (QIMG_REQUIRE_QEMU=1): %v", tool, err)
			}
			t.Skipf("%s not installed", tool)
		}
		if first == "" {
			first = p
		}
	}
	return first
}

// Have reports whether every tool is installed.
func Have(tools ...string) bool {
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return false
		}
	}
	return true
}

// LockedBytes lists the bytes of path locked by any open file description,
// from /proc/locks (OFD locks show pid -1 there, so they are told apart by
// the file's device and inode).
func LockedBytes(t testing.TB, path string) []int64 {
	t.Helper()
	id, err := procLocksID(path)
	if err != nil {
		t.Fatal(err)
	}
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

// Run runs a tool and returns its combined output, failing the test when
// it exits non-zero.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// CheckNoCorruption runs qemu-img check on img and fails the test (saying
// when, for the log) on any corruption or check error; leaks are what a
// crash may leave, so they are returned, not refused.
func CheckNoCorruption(t testing.TB, img, when string) (leaks int64) {
	t.Helper()
	res, _ := exec.Command("qemu-img", "check", "--output=json", img).Output()
	var r struct {
		CheckErrors int64 `json:"check-errors"`
		Corruptions int64 `json:"corruptions"`
		Leaks       int64 `json:"leaks"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		t.Fatalf("%s: qemu-img check %s: %v\n%s", when, img, err, res)
	}
	if r.Corruptions != 0 || r.CheckErrors != 0 {
		human, _ := exec.Command("qemu-img", "check", img).CombinedOutput()
		t.Fatalf("%s: %s: %d corruptions, %d check errors\n%s", when, img, r.Corruptions, r.CheckErrors, human)
	}
	return r.Leaks
}

// Buffer is a bytes.Buffer that a running process may write while the
// test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Helper is a copy of the test binary running one test as a helper
// process, for tests that kill a writer at random moments.
type Helper struct {
	Cmd   *exec.Cmd
	Out   *bufio.Reader // its standard output after the ready line
	ready time.Time
}

// StartHelper runs the test binary with -test.run=^test$ and env added to
// the environment, and waits until the helper prints the line ready (it
// prints it just before the work to be interrupted starts).
func StartHelper(t testing.TB, test string, env []string, ready string) *Helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(out)
	if line, _ := rd.ReadString('\n'); line != ready+"\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper %s: %q, want %q", test, line, ready)
	}
	return &Helper{Cmd: cmd, Out: rd, ready: time.Now()}
}

// Finish lets the helper run to its end, where it prints "done", and
// returns how long it ran after its ready line: the span within which
// later runs are killed.
func (h *Helper) Finish(t testing.TB) time.Duration {
	t.Helper()
	rest, _ := h.Out.ReadString('\n')
	h.Cmd.Wait()
	if rest != "done\n" {
		t.Fatalf("helper: %q, want \"done\"", rest)
	}
	return time.Since(h.ready)
}

// KillAfter kills the helper (SIGKILL) d after its ready line and returns
// what it printed before dying, trimmed.
func (h *Helper) KillAfter(d time.Duration) string {
	time.Sleep(time.Until(h.ready.Add(d)))
	h.Cmd.Process.Kill()
	rest, _ := h.Out.ReadString('\n')
	h.Cmd.Wait()
	return strings.TrimSpace(rest)
}

// Kill ends the helper with SIGKILL and reaps it.
func (h *Helper) Kill() {
	h.Cmd.Process.Kill()
	h.Cmd.Wait()
}
