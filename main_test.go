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
//	waitlock FILE [BYTE…]   wait (up to 30 s) until another process holds a QEMU lock byte on FILE
//	                        (each BYTE given, e.g. 201: it refuses to share "write"; any one without)
//	waitout REGEXP PROG ARGS…  run PROG again (up to 30 s) until its stdout matches REGEXP
//	                        (a state a background process reaches after taking its locks)
//	truncate FILE SIZE      set FILE's length in bytes (creating it)
//	status N PROG ARGS…     run PROG and require exit status N; its stdout and stderr
//	                        become the script's (for commands with several failure codes)
//	httpserve VAR [norange] serve the work folder over HTTP on 127.0.0.1 (byte ranges, as
//	                        http.ServeContent serves them; none with norange) and set $VAR to its URL;
//	                        also: tls (self-signed), auth=USER:PASSWORD, cookie=NAME=VALUE;
//	                        /moved/PATH redirects to /PATH
//	stallserve VAR          accept TCP connections on 127.0.0.1 and never answer; $VAR is the port
//	s3serve [FAULT…]        serve $WORK/s3 as S3 on 127.0.0.1 (buckets are its folders, objects
//	                        their files) and set the AWS variables for it (s3serve_test.go); gofakes3,
//	                        and versitygw when TestS3Servers runs the s3_* scripts again
//	s3uploads N             require N multipart uploads open on that server
//	tmpfs DIR SIZE          mount a tmpfs of SIZE bytes on DIR (made if missing), unmounted
//	                        when the script ends: a small file system that really fills up
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
//	[tmpfs] this process may mount a tmpfs (root with CAP_SYS_ADMIN)
//	[nbdkit] nbdkit is on PATH (an error under QIMG_REQUIRE_QEMU=1 when it is not)
//
// Run one script: go test -run 'TestScripts/create_sizes' .
// Rewrite the expected outputs inside the scripts: QIMG_UPDATE_SCRIPTS=1 go test -run TestScripts .

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"qimg/cmd"
	"qimg/formats/file"
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
	testscript.Run(t, scriptParams(qemu))
}

// scriptParams run the scripts of testdata/script with the commands and
// conditions above.
func scriptParams(qemu bool) testscript.Params {
	return testscript.Params{
		Dir:                 "testdata/script",
		UpdateScripts:       os.Getenv("QIMG_UPDATE_SCRIPTS") == "1",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			// qemu-img's messages are in English; keep locale-dependent tools stable.
			env.Setenv("LC_ALL", "C")
			// 0 in a build that writes zeroes instead of punching holes
			// (-tags qimg_portable): same bytes, more room on disk
			env.Setenv("QIMG_PUNCHES_HOLES", strconv.Itoa(boolInt(file.PunchesHoles)))
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "qemu":
				return qemu, nil
			case "root":
				return os.Geteuid() == 0, nil
			case "tmpfs":
				return canMountTmpfs(), nil
			case "nbdkit":
				_, err := exec.LookPath("nbdkit")
				if err != nil && os.Getenv("QIMG_REQUIRE_QEMU") == "1" {
					return false, fmt.Errorf("QIMG_REQUIRE_QEMU=1 but nbdkit is not on PATH (install nbdkit)")
				}
				return err == nil, nil
			}
			return false, errUnknownCondition(cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"sum":        cmdSum,
			"dropline":   cmdDropline,
			"replace":    cmdReplace,
			"waitlock":   cmdWaitlock,
			"waitout":    cmdWaitout,
			"truncate":   cmdTruncate,
			"probes":     cmdProbes,
			"status":     cmdStatus,
			"httpserve":  cmdHTTPServe,
			"stallserve": cmdStallServe,
			"s3serve":    cmdS3Serve,
			"s3uploads":  cmdS3Uploads,
			"tmpfs":      cmdTmpfs,
		},
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
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
// (100..299) on the file, or each of the bytes named: QEMU takes its bytes
// one at a time, so a test that needs a given refusal waits for its byte.
func cmdWaitlock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: waitlock FILE [BYTE...]")
	}
	p := ts.MkAbs(args[0])
	ranges := [][2]int64{{100, 200}}
	if len(args) > 1 {
		ranges = nil
		for _, a := range args[1:] {
			b, err := strconv.ParseInt(a, 10, 64)
			ts.Check(err)
			ranges = append(ranges, [2]int64{b, 1})
		}
	}
	waitUntil(ts, "a lock on "+args[0], func() bool {
		for _, r := range ranges {
			if held, err := lockHeld(p, r[0], r[1]); err != nil || !held {
				return false
			}
		}
		return true
	})
}

// cmdWaitout runs a command until its standard output matches a pattern.
func cmdWaitout(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: waitout REGEXP PROG ARGS...")
	}
	re, err := regexp.Compile(args[0])
	ts.Check(err)
	waitUntil(ts, strconv.Quote(args[0])+" in the output of "+args[1], func() bool {
		cmd := exec.Command(args[1], args[2:]...)
		cmd.Dir = ts.Getenv("WORK")
		cmd.Env = append(os.Environ(), "PATH="+ts.Getenv("PATH"))
		out, _ := cmd.Output()
		return re.Match(out)
	})
}

// waitUntil polls cond for up to 30 s: scripts wait for a state, never
// for a time.
func waitUntil(ts *testscript.TestScript, what string, cond func() bool) {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			ts.Fatalf("no %s within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
