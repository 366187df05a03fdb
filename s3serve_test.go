package main

// s3serve: an S3 server on loopback for the scripts (gofakes3), whose
// buckets are the folders of $WORK/s3 and whose objects are plain files
// there, so that qemu-img reads what qimg wrote to a bucket and qimg
// reads from a bucket what qemu-img wrote. Faults are injected in front.

import (
	"crypto/md5"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/rogpeppe/go-internal/testscript"
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
	fake := gofakes3.New(&dirBackend{Backend: s3mem.New(), root: root}, gofakes3.WithTimeSkewLimit(0))
	f.next = fake.Server()
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

// dirBackend keeps buckets as folders and objects as files, and their
// user metadata (x-amz-meta-*) in memory; the rest of the interface
// (listings, deletes) comes from an empty memory backend.
type dirBackend struct {
	gofakes3.Backend
	root string
	mu   sync.Mutex
	meta map[string]map[string]string // by object path
}

// userMeta keeps the x-amz-meta-* entries of meta.
func userMeta(meta map[string]string) map[string]string {
	kept := map[string]string{}
	for k, v := range meta {
		if strings.HasPrefix(strings.ToLower(k), "x-amz-meta-") {
			kept[k] = v
		}
	}
	return kept
}

func (d *dirBackend) setMeta(p string, meta map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.meta == nil {
		d.meta = map[string]map[string]string{}
	}
	d.meta[p] = userMeta(meta)
}

func (d *dirBackend) metaOf(p string) map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meta[p]
}

// CopyObject copies the file (unless onto itself) and sets the metadata
// the request gave.
func (d *dirBackend) CopyObject(srcBucket, srcKey, dstBucket, dstKey string, meta map[string]string) (gofakes3.CopyObjectResult, error) {
	src, err := d.GetObject(srcBucket, srcKey, nil)
	if err != nil {
		return gofakes3.CopyObjectResult{}, err
	}
	defer src.Contents.Close()
	if srcBucket != dstBucket || srcKey != dstKey {
		if _, err := d.PutObject(dstBucket, dstKey, meta, src.Contents, src.Size, nil); err != nil {
			return gofakes3.CopyObjectResult{}, err
		}
	}
	p, err := d.objectPath(dstBucket, dstKey)
	if err != nil {
		return gofakes3.CopyObjectResult{}, err
	}
	d.setMeta(p, meta)
	return gofakes3.CopyObjectResult{ETag: `"` + fmt.Sprintf("%x", src.Hash) + `"`, LastModified: gofakes3.NewContentTime(time.Now())}, nil
}

func (d *dirBackend) bucketDir(bucket string) (string, error) {
	dir := filepath.Join(d.root, bucket)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", gofakes3.BucketNotFound(bucket)
	}
	return dir, nil
}

func (d *dirBackend) objectPath(bucket, key string) (string, error) {
	dir, err := d.bucketDir(bucket)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, filepath.FromSlash(path.Clean("/"+key))), nil
}

func (d *dirBackend) BucketExists(bucket string) (bool, error) {
	_, err := d.bucketDir(bucket)
	return err == nil, nil
}

func (d *dirBackend) HeadObject(bucket, key string) (*gofakes3.Object, error) {
	return d.GetObject(bucket, key, nil)
}

func (d *dirBackend) GetObject(bucket, key string, rr *gofakes3.ObjectRangeRequest) (*gofakes3.Object, error) {
	p, err := d.objectPath(bucket, key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, gofakes3.KeyNotFound(key)
	}
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		f.Close()
		return nil, gofakes3.KeyNotFound(key)
	}
	rng, err := rr.Range(st.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	var body io.ReadCloser = f
	if rng != nil {
		body = struct {
			io.Reader
			io.Closer
		}{io.NewSectionReader(f, rng.Start, rng.Length), f}
	}
	etag := md5.Sum([]byte(fmt.Sprint(st.Size(), st.ModTime().UnixNano())))
	meta := map[string]string{"Last-Modified": st.ModTime().UTC().Format(http.TimeFormat)}
	for k, v := range d.metaOf(p) {
		meta[k] = v
	}
	return &gofakes3.Object{Name: key, Size: st.Size(), Contents: body, Range: rng, Hash: etag[:], Metadata: meta}, nil
}

// PutObject writes the object beside its key and renames it there: an
// object appears whole or not at all.
func (d *dirBackend) PutObject(bucket, key string, meta map[string]string, input io.Reader, size int64, _ *gofakes3.PutConditions) (gofakes3.PutObjectResult, error) {
	p, err := d.objectPath(bucket, key)
	if err != nil {
		return gofakes3.PutObjectResult{}, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
		return gofakes3.PutObjectResult{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".upload-*")
	if err != nil {
		return gofakes3.PutObjectResult{}, err
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, input)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err == nil {
		d.setMeta(p, meta)
	}
	return gofakes3.PutObjectResult{}, err
}
