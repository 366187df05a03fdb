package main

// A remote S3 server as s3serve's backend (QIMG_S3_REMOTE, see
// testdata/ceph/run.sh): the scripts keep their objects as files under
// $WORK/s3, made and checked with qemu-img, so the mirror sends each file
// that changed there to the server before it forwards a request, and
// brings back each object a request completed. Requests go through as
// the client signed them.

import (
	"context"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/rogpeppe/go-internal/testscript"
)

// mirrors are the scripts' mirrors by work folder: a script that starts
// s3serve again keeps its mirror.
var mirrors sync.Map

type mirror struct {
	root   string
	client *minio.Client
	proxy  http.Handler

	mu      sync.Mutex
	buckets map[string]bool
	stamps  map[string]fileStamp // by local path: as last sent or brought back
}

type fileStamp struct {
	size  int64
	mtime time.Time
}

func stampOf(fi os.FileInfo) fileStamp { return fileStamp{fi.Size(), fi.ModTime()} }

// remoteMirror is the handler that forwards to the server at rawURL,
// after emptying the server's buckets: the scripts run one at a time.
func remoteMirror(ts *testscript.TestScript, root, rawURL string) http.Handler {
	work := ts.Getenv("WORK")
	if m, ok := mirrors.Load(work); ok {
		return m.(*mirror)
	}
	u, err := url.Parse(rawURL)
	ts.Check(err)
	client, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(s3TestKeyID, s3TestSecret, ""),
		Secure:       u.Scheme == "https",
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	ts.Check(err)
	m := &mirror{root: root, client: client, buckets: map[string]bool{}, stamps: map[string]fileStamp{}}
	m.proxy = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.Out.Host = r.In.Host // signed by the client
	}}
	ts.Check(m.emptyServer())
	mirrors.Store(work, m)
	ts.Defer(func() { mirrors.Delete(work) })
	return m
}

func (m *mirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := m.send(); err != nil {
		s3Error(w, http.StatusInternalServerError, "MirrorFailed", err.Error())
		return
	}
	rec := &statusOf{ResponseWriter: w, code: http.StatusOK}
	m.proxy.ServeHTTP(rec, r)
	if rec.code < 300 && writesObject(r) {
		bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if err := m.bringBack(bucket, key); err != nil {
			panic(http.ErrAbortHandler) // the client sees a failed request
		}
	}
}

// writesObject: a PUT of a whole object or a copy, or the completion of
// a multipart upload.
func writesObject(r *http.Request) bool {
	q := r.URL.Query()
	switch r.Method {
	case http.MethodPut:
		return q.Get("partNumber") == "" && strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 1
	case http.MethodPost:
		return q.Get("uploadId") != ""
	}
	return false
}

// emptyServer removes every bucket of the server, with its objects and
// unfinished uploads.
func (m *mirror) emptyServer() error {
	ctx := context.Background()
	buckets, err := m.client.ListBuckets(ctx)
	if err != nil {
		return err
	}
	for _, b := range buckets {
		for obj := range m.client.ListObjects(ctx, b.Name, minio.ListObjectsOptions{Recursive: true}) {
			if obj.Err != nil {
				return obj.Err
			}
			if err := m.client.RemoveObject(ctx, b.Name, obj.Key, minio.RemoveObjectOptions{}); err != nil {
				return err
			}
		}
		for up := range m.client.ListIncompleteUploads(ctx, b.Name, "", true) {
			if up.Err != nil {
				return up.Err
			}
			if err := m.client.RemoveIncompleteUpload(ctx, b.Name, up.Key); err != nil {
				return err
			}
		}
		if err := m.client.RemoveBucket(ctx, b.Name); err != nil {
			return err
		}
	}
	return nil
}

// send makes a bucket of each folder of root and sends the files that
// changed since they were last sent or brought back.
func (m *mirror) send() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dirs, err := os.ReadDir(m.root)
	if err != nil {
		return err
	}
	ctx := context.Background()
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		bucket := d.Name()
		if !m.buckets[bucket] {
			if err := m.client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
				return err
			}
			m.buckets[bucket] = true
		}
		err := filepath.Walk(filepath.Join(m.root, bucket), func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() || m.stamps[p] == stampOf(fi) {
				return err
			}
			key, _ := filepath.Rel(filepath.Join(m.root, bucket), p)
			return m.sendFile(bucket, filepath.ToSlash(key), p, fi)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// sendFile sends a file as an object; a file changed in place keeps the
// user metadata of its object, as it would on a server of files.
func (m *mirror) sendFile(bucket, key, p string, fi os.FileInfo) error {
	ctx := context.Background()
	var opts minio.PutObjectOptions
	if _, known := m.stamps[p]; known {
		st, err := m.client.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
		if err != nil {
			return err
		}
		opts.UserMetadata = st.UserMetadata
	}
	if _, err := m.client.FPutObject(ctx, bucket, key, p, opts); err != nil {
		return err
	}
	m.stamps[p] = stampOf(fi)
	return nil
}

// bringBack writes an object the server completed into its file, whole
// or not at all, as the other servers' objects appear.
func (m *mirror) bringBack(bucket, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := filepath.Join(m.root, bucket, filepath.FromSlash(key))
	tmp := filepath.Join(filepath.Dir(p), ".mirror-"+filepath.Base(p))
	if err := m.client.FGetObject(context.Background(), bucket, key, tmp, minio.GetObjectOptions{}); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	m.stamps[p] = stampOf(fi)
	return nil
}
