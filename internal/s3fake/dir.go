// Package s3fake is a gofakes3 backend whose buckets are the folders of
// a directory and whose objects are plain files there: the tests' S3
// server (s3serve) and the S3 benchmark serve it, so that qemu-img reads
// what qimg wrote to a bucket and qimg reads what qemu-img wrote.
package s3fake

import (
	"crypto/md5"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// NewDir serves the folders of root as buckets.
func NewDir(root string) *Dir { return &Dir{Backend: s3mem.New(), root: root} }

// Dir keeps buckets as folders and objects as files, and their
// user metadata (x-amz-meta-*) in memory; the rest of the interface
// (listings, deletes) comes from an empty memory backend.
type Dir struct {
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

func (d *Dir) setMeta(p string, meta map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.meta == nil {
		d.meta = map[string]map[string]string{}
	}
	d.meta[p] = userMeta(meta)
}

func (d *Dir) metaOf(p string) map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meta[p]
}

// CopyObject copies the file (unless onto itself) and sets the metadata
// the request gave.
func (d *Dir) CopyObject(srcBucket, srcKey, dstBucket, dstKey string, meta map[string]string) (gofakes3.CopyObjectResult, error) {
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

func (d *Dir) bucketDir(bucket string) (string, error) {
	dir := filepath.Join(d.root, bucket)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", gofakes3.BucketNotFound(bucket)
	}
	return dir, nil
}

func (d *Dir) objectPath(bucket, key string) (string, error) {
	dir, err := d.bucketDir(bucket)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, filepath.FromSlash(path.Clean("/"+key))), nil
}

func (d *Dir) BucketExists(bucket string) (bool, error) {
	_, err := d.bucketDir(bucket)
	return err == nil, nil
}

func (d *Dir) HeadObject(bucket, key string) (*gofakes3.Object, error) {
	return d.GetObject(bucket, key, nil)
}

func (d *Dir) GetObject(bucket, key string, rr *gofakes3.ObjectRangeRequest) (*gofakes3.Object, error) {
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
func (d *Dir) PutObject(bucket, key string, meta map[string]string, input io.Reader, size int64, _ *gofakes3.PutConditions) (gofakes3.PutObjectResult, error) {
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
