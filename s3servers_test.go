package main

// The S3 scripts again against real S3 servers: versitygw (a Go S3
// gateway) with its posix backend on $WORK/s3, where each object is a
// plain file as with the tests' gofakes3, behind the same fault injector
// (test.sh and .ci/run install it: go install …/versitygw@v1.8.0); or
// any server the scripts' folder is mirrored to (s3mirror_test.go).

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"qimg/internal/s3fake"
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
	} else if versitygwPath = s3fake.FindVersitygw(); versitygwPath == "" {
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

// startVersitygw runs versitygw on root with the scripts' keys until
// the script ends.
func startVersitygw(ts *testscript.TestScript, root string) string {
	v, err := s3fake.StartVersitygw(versitygwPath, root, s3TestKeyID, s3TestSecret)
	ts.Check(err)
	ts.Defer(v.Stop)
	return v.Addr
}
