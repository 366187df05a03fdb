package main

// The S3 scripts again against real S3 servers: versitygw (a Go S3
// gateway) with its posix backend on $WORK/s3, where each object is a
// plain file as with the tests' gofakes3, behind the same fault injector
// (test.sh and .ci/run install it: go install …/versitygw@v1.8.0); or
// any server the scripts' folder is mirrored to (s3mirror_test.go).

import (
	"bytes"
	"go/build"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// s3ServerVar names the server s3serve starts: "versitygw", "remote"
// (the server at s3RemoteVar's URL), else gofakes3.
const (
	s3ServerVar = "QIMG_S3_SERVER"
	s3RemoteVar = "QIMG_S3_REMOTE"
)

// TestS3Servers runs the S3 scripts against versitygw, or with
// QIMG_S3_REMOTE=URL against the S3 server there (testdata/ceph/run.sh:
// Ceph's RADOS Gateway), one script at a time (go test -parallel 1):
// the scripts' buckets are emptied there when each starts.
func TestS3Servers(t *testing.T) {
	qemu := haveQemu()
	required := os.Getenv("QIMG_REQUIRE_QEMU") == "1"
	if !qemu && required {
		t.Fatal("QIMG_REQUIRE_QEMU=1 but qemu-img or qemu-io is not on PATH (install qemu-utils)")
	}
	server := "versitygw"
	if remote := os.Getenv(s3RemoteVar); remote != "" {
		server = "remote"
	} else if versitygwPath = findVersitygw(); versitygwPath == "" {
		if required {
			t.Fatal("QIMG_REQUIRE_QEMU=1 but versitygw is neither on PATH nor in Go's bin folder (./test.sh installs it)")
		}
		t.Skip("versitygw is neither on PATH nor in Go's bin folder (./test.sh installs it)")
	}
	scripts, err := filepath.Glob("testdata/script/s3_*.txtar")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no S3 scripts: %v", err)
	}
	p := scriptParams(qemu)
	p.Dir, p.Files = "", scripts
	setup := p.Setup
	p.Setup = func(env *testscript.Env) error {
		env.Setenv(s3ServerVar, server)
		return setup(env)
	}
	testscript.Run(t, p)
}

// versitygwPath is the gateway's program, found by TestS3Servers.
var versitygwPath string

// findVersitygw looks on PATH, then where go install puts programs.
func findVersitygw() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	dir := os.Getenv("GOBIN")
	if dir == "" {
		dir = filepath.Join(build.Default.GOPATH, "bin")
	}
	p := filepath.Join(dir, "versitygw")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// s3Backend is the server behind s3serve's fault injector for the
// script: gofakes3 in this process, or versitygw.
func s3Backend(ts *testscript.TestScript, root string, gofakes3 func() http.Handler) http.Handler {
	switch server := ts.Getenv(s3ServerVar); server {
	case "":
		return gofakes3()
	case "versitygw":
		return versitygwProxy(ts, root)
	case "remote":
		return remoteMirror(ts, root, os.Getenv(s3RemoteVar))
	default:
		ts.Fatalf("%s=%s: no such S3 server", s3ServerVar, server)
		return nil
	}
}

// versitygws are the running gateways by work folder: a script that
// starts s3serve again (other faults) keeps its gateway.
var versitygws sync.Map

// versitygwProxy forwards to the script's gateway, started on first use
// and stopped when the script ends. The Host header goes through as the
// client sent it: it is part of what the client signed.
func versitygwProxy(ts *testscript.TestScript, root string) http.Handler {
	work := ts.Getenv("WORK")
	addr, ok := versitygws.Load(work)
	if !ok {
		addr = startVersitygw(ts, root)
		versitygws.Store(work, addr)
		ts.Defer(func() { versitygws.Delete(work) })
	}
	target := &url.URL{Scheme: "http", Host: addr.(string)}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
		},
	}
}

// startVersitygw runs versitygw's posix backend on root with the
// scripts' keys on a free loopback port, and waits until it answers.
func startVersitygw(ts *testscript.TestScript, root string) string {
	addr := freeLoopbackAddr(ts)
	cmd := exec.Command(versitygwPath, "--port", addr, "--quiet", "posix", root)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s3TestKeyID, "ROOT_SECRET_KEY="+s3TestSecret)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ts.Check(cmd.Start())
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	ts.Defer(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			ts.Fatalf("versitygw ended before it served: %s", out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			ts.Fatalf("versitygw does not answer on %s within 30s: %s", addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeLoopbackAddr is a loopback port free a moment ago, for a server
// that cannot be handed a listener.
func freeLoopbackAddr(ts *testscript.TestScript) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	defer ln.Close()
	return ln.Addr().String()
}
