package main

// CLI scripts: testdata/script/*.txtar run through testscript, with the
// qimg binary (this test binary, re-executed) on PATH next to the real
// qemu-img, qemu-io and qemu-nbd, which serve as the reference.
//
// Commands scripts can use beyond testscript's own:
//
//	qimg ARGS…              qimg itself
//	qimg-as-qemu-img ARGS…  qimg answering as if installed under the name qemu-img
//	sum FILE                print FILE's sha256 (then: cp stdout before.sum … cmp stdout before.sum)
//	dropline REGEXP FILE…   delete the lines matching REGEXP from each FILE, in place
//	replace OLD NEW FILE…   replace every OLD by NEW in each FILE, in place
//	waitlock FILE           wait (up to 30 s) until another process holds a QEMU lock byte on FILE
//	truncate FILE SIZE      set FILE's length in bytes (creating it)
//	status N PROG ARGS…     run PROG and require exit status N; its stdout and stderr
//	                        become the script's (for commands with several failure codes)
//	probes FILE             qimg info names FILE's format as qemu-img info does, or refuses
//	                        with "format 'X' is not supported yet" for qemu-img's X
//
// An image held open by QEMU, as a running VM would hold it:
//
//	! exec qemu-io -c 'sleep 100000' img.qcow2 &qio&   (the "!": it ends killed)
//	waitlock img.qcow2
//	...                                                 (qemu-io holds its locks here)
//	kill qio
//	wait
//
// Conditions:
//
//	[qemu]  qemu-img and qemu-io are on PATH (QIMG_REQUIRE_QEMU=1 makes their absence a failure)
//	[root]  the test runs as root (permission bits do not stop reads)
//
// Run one script: go test -run 'TestScripts/create_sizes' .
// Rewrite the expected outputs inside the scripts: QIMG_UPDATE_SCRIPTS=1 go test -run TestScripts .

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"

	"qimg/cmd"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"qimg": func() { os.Exit(cmd.Main(os.Args)) },
		"qimg-as-qemu-img": func() {
			// os.Args too: drivers name the program in lines they print
			os.Args[0] = "qemu-img"
			args := append([]string{"qemu-img"}, os.Args[1:]...)
			os.Exit(cmd.Main(args))
		},
	})
}

// haveQemu reports whether the reference tools are installed.
func haveQemu() bool {
	for _, p := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(p); err != nil {
			return false
		}
	}
	return true
}

func TestScripts(t *testing.T) {
	qemu := haveQemu()
	if !qemu && os.Getenv("QIMG_REQUIRE_QEMU") == "1" {
		t.Fatal("QIMG_REQUIRE_QEMU=1 but qemu-img or qemu-io is not on PATH (install qemu-utils)")
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		UpdateScripts:       os.Getenv("QIMG_UPDATE_SCRIPTS") == "1",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			// qemu-img's messages are in English; keep locale-dependent tools stable.
			env.Setenv("LC_ALL", "C")
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "qemu":
				return qemu, nil
			case "root":
				return os.Geteuid() == 0, nil
			}
			return false, errUnknownCondition(cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"sum":      cmdSum,
			"dropline": cmdDropline,
			"replace":  cmdReplace,
			"waitlock": cmdWaitlock,
			"truncate": cmdTruncate,
			"probes":   cmdProbes,
			"status":   cmdStatus,
		},
	})
}

type errUnknownCondition string

func (e errUnknownCondition) Error() string { return "unknown condition " + strconv.Quote(string(e)) }

func cmdSum(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: sum FILE")
	}
	f, err := os.Open(ts.MkAbs(args[0]))
	ts.Check(err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	ts.Check(err)
	ts.Stdout().Write([]byte(hex.EncodeToString(h.Sum(nil)) + "\n"))
}

func cmdDropline(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: dropline REGEXP FILE...")
	}
	re, err := regexp.Compile(args[0])
	ts.Check(err)
	for _, name := range args[1:] {
		p := ts.MkAbs(name)
		data, err := os.ReadFile(p)
		ts.Check(err)
		var out []byte
		for _, line := range bytes.SplitAfter(data, []byte("\n")) {
			if len(line) > 0 && !re.Match(bytes.TrimSuffix(line, []byte("\n"))) {
				out = append(out, line...)
			}
		}
		ts.Check(os.WriteFile(p, out, 0o666))
	}
}

func cmdReplace(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 {
		ts.Fatalf("usage: replace OLD NEW FILE...")
	}
	for _, name := range args[2:] {
		p := ts.MkAbs(name)
		data, err := os.ReadFile(p)
		ts.Check(err)
		data = bytes.ReplaceAll(data, []byte(args[0]), []byte(args[1]))
		ts.Check(os.WriteFile(p, data, 0o666))
	}
}

// cmdWaitlock waits until another process holds one of QEMU's lock bytes
// (100..299) on the file: a background qemu-io has opened the image.
func cmdWaitlock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitlock FILE")
	}
	p := ts.MkAbs(args[0])
	deadline := time.Now().Add(30 * time.Second)
	for {
		if held, err := lockHeld(p); err == nil && held {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("no process took a lock on %s within 30s", args[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lockHeld(path string) (bool, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 100, Len: 200}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &fl); err != nil {
		return false, err
	}
	return fl.Type != unix.F_UNLCK, nil
}

func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status N PROG ARGS...")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	cmd := exec.Command(args[1], args[2:]...)
	cmd.Dir = ts.Getenv("WORK")
	cmd.Env = os.Environ()
	cmd.Env = append(cmd.Env, "PATH="+ts.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	got := 0
	if ee, ok := err.(*exec.ExitError); ok {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("%s: %v", args[1], err)
	}
	ts.Stdout().Write(stdout.Bytes())
	ts.Stderr().Write(stderr.Bytes())
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d\n%s", args[1], got, want, stderr.String())
	}
}

func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: truncate FILE SIZE")
	}
	n, err := strconv.ParseInt(args[1], 0, 64)
	ts.Check(err)
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_RDWR|os.O_CREATE, 0o666)
	ts.Check(err)
	ts.Check(f.Truncate(n))
	ts.Check(f.Close())
}

// cmdProbes checks that qimg recognises FILE's format as qemu-img does:
// either qimg info reports the same format, or it refuses with
// "format 'X' is not supported yet" for that very X; never another guess.
func cmdProbes(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: probes FILE")
	}
	format := func(out string) string {
		var v struct {
			Format string `json:"format"`
		}
		ts.Check(json.Unmarshal([]byte(out), &v))
		return v.Format
	}
	ts.Check(ts.Exec("qemu-img", "info", "--output=json", args[0]))
	want := format(ts.ReadFile("stdout"))
	if err := ts.Exec("qimg", "info", "--output=json", args[0]); err != nil {
		stderr := ts.ReadFile("stderr")
		if !strings.Contains(stderr, "format '"+want+"' is not supported yet") {
			ts.Fatalf("%s: qemu-img says %s, qimg fails with: %s", args[0], want, stderr)
		}
		if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "qimg: ") {
			ts.Fatalf("%s: not one line starting \"qimg: \": %q", args[0], stderr)
		}
		return
	}
	if got := format(ts.ReadFile("stdout")); got != want {
		ts.Fatalf("%s: qemu-img says %s, qimg says %s", args[0], want, got)
	}
}
