package main

// s3serve: an S3 server on loopback for the scripts (gofakes3 over
// s3fake.Dir, or versitygw under TestS3Servers), whose buckets are the
// folders of $WORK/s3 and whose objects are plain files there, so that
// qemu-img reads what qimg wrote to a bucket and qimg reads from a bucket
// what qemu-img wrote. Faults are injected in front.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/rogpeppe/go-internal/testscript"

	"qimg/internal/s3fake"
)

// Keys the scripts' server accepts.
const (
	s3TestKeyID  = "qimgtestkey"
	s3TestSecret = "qimgtestsecret/do-not-print"
)

// s3Servers are the running servers by work folder, for s3uploads.
var s3Servers sync.Map

// cmdS3Serve starts the server and points the AWS variables at it:
//
//	s3serve [503=N] [reset=N] [denypart=N] [stallpart=N]
//
// 503=N answers the first N requests "503 Slow Down"; reset=N breaks off
// the first N ranged GETs half way through their body; denypart=N answers
// every upload of part N "403 Access Denied"; stallpart=N never answers
// the upload of part N (a convert to kill mid-upload). Requests signed
// with other keys than the server's are refused with 403.
func cmdS3Serve(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("usage: s3serve [503=N] [reset=N] [denypart=N] [stallpart=N]")
	}
	root := ts.MkAbs("s3")
	ts.Check(os.MkdirAll(root, 0o777))
	f := &s3Faults{root: root}
	for _, a := range args {
		name, val, _ := strings.Cut(a, "=")
		n, err := strconv.Atoi(val)
		if err != nil {
			ts.Fatalf("s3serve: bad fault %q", a)
		}
		switch name {
		case "503":
			f.unavailable.Store(int64(n))
		case "reset":
			f.resets.Store(int64(n))
		case "denypart":
			f.denyPart = val
		case "stallpart":
			f.stallPart = val
		default:
			ts.Fatalf("s3serve: unknown fault %q", a)
		}
	}
	f.next = s3Backend(ts, root, func() http.Handler {
		return gofakes3.New(s3fake.NewDir(root), gofakes3.WithTimeSkewLimit(0)).Server()
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	srv := &http.Server{Handler: f}
	go srv.Serve(ln)
	s3Servers.Store(ts.Getenv("WORK"), f)
	ts.Defer(func() {
		srv.Close()
		s3Servers.Delete(ts.Getenv("WORK"))
	})
	ts.Setenv("AWS_ENDPOINT_URL", "http://"+ln.Addr().String())
	ts.Setenv("AWS_ACCESS_KEY_ID", s3TestKeyID)
	ts.Setenv("AWS_SECRET_ACCESS_KEY", s3TestSecret)
	ts.Setenv("AWS_REGION", "us-east-1")
	ts.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// cmdS3Uploads waits (up to 30 s) until N multipart uploads are open on
// the server: one while a convert uploads, none once it ended.
func cmdS3Uploads(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: s3uploads N")
	}
	want, err := strconv.ParseInt(args[0], 10, 64)
	ts.Check(err)
	v, ok := s3Servers.Load(ts.Getenv("WORK"))
	if !ok {
		ts.Fatalf("s3uploads: no s3serve running")
	}
	f := v.(*s3Faults)
	deadline := time.Now().Add(30 * time.Second)
	for f.openUploads.Load() != want {
		if time.Now().After(deadline) {
			ts.Fatalf("%d multipart uploads open, want %d", f.openUploads.Load(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// s3Faults checks the keys, injects the faults and counts the open
// multipart uploads in front of the server.
type s3Faults struct {
	next        http.Handler
	root        string
	unavailable atomic.Int64
	resets      atomic.Int64
	denyPart    string
	stallPart   string
	openUploads atomic.Int64
}

func (f *s3Faults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch {
	case !strings.Contains(r.Header.Get("Authorization"), "Credential="+s3TestKeyID+"/"):
		s3Error(w, http.StatusForbidden, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
	case f.unavailable.Add(-1) >= 0:
		s3Error(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case r.Method == http.MethodPut && f.denyPart != "" && q.Get("partNumber") == f.denyPart:
		s3Error(w, http.StatusForbidden, "AccessDenied", "Access Denied")
	case r.Method == http.MethodPut && f.stallPart != "" && q.Get("partNumber") == f.stallPart:
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	case r.Method == http.MethodGet && r.Header.Get("Range") != "" && f.resets.Add(-1) >= 0:
		f.next.ServeHTTP(&breakOff{ResponseWriter: w}, r)
	default:
		rec := &statusOf{ResponseWriter: w, code: http.StatusOK}
		f.next.ServeHTTP(rec, r)
		f.countUploads(r, rec.code)
	}
}

// countUploads follows the multipart uploads that start and end.
func (f *s3Faults) countUploads(r *http.Request, code int) {
	q := r.URL.Query()
	_, starts := q["uploads"]
	ends := q.Get("uploadId") != "" && (r.Method == http.MethodDelete || r.Method == http.MethodPost)
	switch {
	case code >= 300:
	case r.Method == http.MethodPost && starts:
		f.openUploads.Add(1)
	case ends:
		f.openUploads.Add(-1)
	}
}

func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s</Message></Error>", code, msg)
}

type statusOf struct {
	http.ResponseWriter
	code int
}

func (s *statusOf) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// breakOff sends half of a body and then drops the connection.
type breakOff struct {
	http.ResponseWriter
	sent, limit int64
}

func (b *breakOff) WriteHeader(code int) {
	b.limit, _ = strconv.ParseInt(b.Header().Get("Content-Length"), 10, 64)
	b.limit /= 2
	b.ResponseWriter.WriteHeader(code)
}

func (b *breakOff) Write(p []byte) (int, error) {
	if b.sent+int64(len(p)) > b.limit {
		b.ResponseWriter.Write(p[:b.limit-b.sent])
		panic(http.ErrAbortHandler)
	}
	b.sent += int64(len(p))
	return b.ResponseWriter.Write(p)
}
